// A guest's saved image in the save directory: NAME.save (complete images
// only, renamed into place), the sidecar NAME.json recording the guest's
// state before the save (written atomically before the save starts), and
// NAME.save.restoring: the image while a restore hands it to QEMU. The rule of
// the marker: the image is renamed to it (and the directory fsynced) before the
// restored guest is let run (`cont`), so an image the guest may have run from
// is never restored again; a marker found at the next start is moved aside to
// NAME.save.used-TIME for the admin, never restored and never deleted. An
// image older than the running guest (see stale-image.ts) is moved aside the
// same way, to NAME.save.stale-TIME.
import { lstat, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ProtocolError } from '../errors.js';
import { withFsDeadline } from './fs-deadline.js';
import { fsyncDir, isOwnRegularFile, writeFileAtomic } from './private-dir.js';

/** The files of one guest's saved state. */
export interface SavedImagePaths {
  image: string;
  sidecar: string;
  /** The image while it is being restored (see the rule above). */
  restoring: string;
  /** Where a marked image is moved aside at the next start. */
  used(at: Date): string;
  /** Where an image older than the running guest is moved aside. */
  stale(at: Date): string;
  /** A fresh temporary file name for an image being written. */
  temp(): string;
  dir: string;
  /** Temporary files of this guest start with this. */
  partialPrefix: string;
}

/** What the sidecar records. */
export interface SaveSidecar {
  version: 1;
  name: string;
  /** Whether the guest ran (not paused) when the save began. */
  wasRunning: boolean;
  /** Wall-clock ms since the epoch, for people reading it. */
  savedAt: number;
}

/** The saved-state paths of `name` under `saveDir`. */
export function savedImagePaths(saveDir: string, name: string): SavedImagePaths {
  return {
    image: join(saveDir, `${name}.save`),
    sidecar: join(saveDir, `${name}.json`),
    restoring: join(saveDir, `${name}.save.restoring`),
    used: (at) => join(saveDir, `${name}.save.used-${stamp(at)}`),
    stale: (at) => join(saveDir, `${name}.save.stale-${stamp(at)}`),
    temp: () => join(saveDir, `.${name}.save.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`),
    dir: saveDir,
    partialPrefix: `.${name}.save.partial-`,
  };
}

const stamp = (at: Date): string => at.toISOString().replace(/[:.]/g, '-');

/** Whether a complete image exists (a symlink or foreign file there is refused). */
export function hasImage(paths: SavedImagePaths): Promise<boolean> {
  return withFsDeadline(isOwnRegularFile(paths.image), `checking ${paths.image}`);
}

/**
 * Which file NAME.save is (device, inode, size, mtime), or undefined when there is none:
 * a new image (renamed into place) is a new file, so it is told from one that was there before.
 */
export async function imageIdentity(paths: SavedImagePaths): Promise<string | undefined> {
  if (!(await hasImage(paths))) return undefined;
  const st = await withFsDeadline(lstat(paths.image, { bigint: true }), `checking ${paths.image}`);
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
}

/** Whether an image marked as being restored is there (a symlink or foreign file is refused). */
export function hasRestoringMarker(paths: SavedImagePaths): Promise<boolean> {
  return withFsDeadline(isOwnRegularFile(paths.restoring), `checking ${paths.restoring}`);
}

/** Rename `from` to `to` and make it durable (fsync of the directory), each step within its deadline. */
export async function renameDurably(from: string, to: string, dir: string): Promise<void> {
  await withFsDeadline(rename(from, to), `renaming ${from} to ${to}`);
  await withFsDeadline(fsyncDir(dir), `fsync of ${dir}`);
}

/** Mark the image as being restored: NAME.save → NAME.save.restoring, durably. */
export function markRestoring(paths: SavedImagePaths): Promise<void> {
  return renameDurably(paths.image, paths.restoring, paths.dir);
}

/** Take the mark back (the guest never ran from it): NAME.save.restoring → NAME.save, durably. */
export function unmarkRestoring(paths: SavedImagePaths): Promise<void> {
  return renameDurably(paths.restoring, paths.image, paths.dir);
}

/** Move a marked image aside to NAME.save.used-TIME, durably; returns the new name. */
export async function moveMarkedAside(paths: SavedImagePaths, at = new Date()): Promise<string> {
  const to = paths.used(at);
  await renameDurably(paths.restoring, to, paths.dir);
  return to;
}

/** Move an image older than the running guest aside to NAME.save.stale-TIME, durably; returns the new name. */
export async function moveStaleAside(paths: SavedImagePaths, at = new Date()): Promise<string> {
  const to = paths.stale(at);
  await renameDurably(paths.image, to, paths.dir);
  return to;
}

/** Record the state before a save. */
export function writeSidecar(paths: SavedImagePaths, s: SaveSidecar): Promise<void> {
  return withFsDeadline(writeFileAtomic(paths.sidecar, `${JSON.stringify(s, null, 2)}\n`), `writing ${paths.sidecar}`);
}

/** The sidecar, or undefined when there is none; a malformed one is a ProtocolError naming the file. */
export async function readSidecar(paths: SavedImagePaths): Promise<SaveSidecar | undefined> {
  if (!(await withFsDeadline(isOwnRegularFile(paths.sidecar), `checking ${paths.sidecar}`))) return undefined;
  const text = await withFsDeadline(readFile(paths.sidecar, 'utf8'), `reading ${paths.sidecar}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(`${paths.sidecar}: not valid JSON`, { cause: err });
  }
  const s = json as Partial<SaveSidecar> | null;
  if (!s || typeof s !== 'object' || typeof s.wasRunning !== 'boolean') {
    throw new ProtocolError(`${paths.sidecar}: wasRunning: missing or not true/false`);
  }
  return { version: 1, name: String(s.name ?? ''), wasRunning: s.wasRunning, savedAt: Number(s.savedAt ?? 0) };
}

/** Remove a file if it is there. */
export async function removeIfExists(path: string): Promise<void> {
  const op = unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  await withFsDeadline(op, `removing ${path}`);
}

/** Remove temporary image files a crashed save of this guest left behind. */
export async function removeStalePartials(paths: SavedImagePaths): Promise<void> {
  for (const f of await withFsDeadline(readdir(paths.dir), `reading ${paths.dir}`)) {
    if (f.startsWith(paths.partialPrefix)) await removeIfExists(join(paths.dir, f));
  }
}
