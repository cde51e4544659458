// A guest's saved image in the save directory: NAME.save (complete images
// only, renamed into place) and the sidecar NAME.json recording the guest's
// state before the save (written atomically before the save starts).
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ProtocolError } from '../errors.js';
import { isOwnRegularFile, writeFileAtomic } from './private-dir.js';

/** The files of one guest's saved state. */
export interface SavedImagePaths {
  image: string;
  sidecar: string;
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
    temp: () => join(saveDir, `.${name}.save.partial-${process.pid}-${Math.random().toString(36).slice(2, 8)}`),
    dir: saveDir,
    partialPrefix: `.${name}.save.partial-`,
  };
}

/** Whether a complete image exists (a symlink or foreign file there is refused). */
export function hasImage(paths: SavedImagePaths): Promise<boolean> {
  return isOwnRegularFile(paths.image);
}

/** Record the state before a save. */
export function writeSidecar(paths: SavedImagePaths, s: SaveSidecar): Promise<void> {
  return writeFileAtomic(paths.sidecar, `${JSON.stringify(s, null, 2)}\n`);
}

/** The sidecar, or undefined when there is none; a malformed one is a ProtocolError naming the file. */
export async function readSidecar(paths: SavedImagePaths): Promise<SaveSidecar | undefined> {
  if (!(await isOwnRegularFile(paths.sidecar))) return undefined;
  const text = await readFile(paths.sidecar, 'utf8');
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
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Remove temporary image files a crashed save of this guest left behind. */
export async function removeStalePartials(paths: SavedImagePaths): Promise<void> {
  for (const f of await readdir(paths.dir)) {
    if (f.startsWith(paths.partialPrefix)) await removeIfExists(join(paths.dir, f));
  }
}
