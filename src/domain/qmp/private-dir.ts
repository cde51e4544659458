// Directories the driver owns (runtime and save directories): created mode
// 0700 and owned by us (root); a symlink, a non-directory or an entry owned by
// another user in their place is refused, so nothing is written through a link.
import { constants, type Stats } from 'node:fs';
import { chmod, lstat, mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { OperationRefusedError } from '../errors.js';
import { withFsDeadline } from './fs-deadline.js';

/** A path the driver refuses to use (symlink, wrong type or owner). */
export class UnsafePathError extends OperationRefusedError {
  constructor(readonly path: string, problem: string) {
    super(`${path}: ${problem}; refusing to use it`);
  }
}

function myUid(): number {
  return process.geteuid?.() ?? 0;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Create `dir` (mode 0700) or check the one there: a real directory, owned by us, then tightened to 0700. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  let st = await lstatOrUndefined(dir);
  if (!st) {
    await mkdir(dirname(dir), { recursive: true, mode: 0o755 });
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    st = await lstat(dir);
  }
  if (st.isSymbolicLink()) throw new UnsafePathError(dir, 'is a symbolic link, not a directory');
  if (!st.isDirectory()) throw new UnsafePathError(dir, 'is not a directory');
  if (st.uid !== myUid()) throw new UnsafePathError(dir, `is owned by uid ${st.uid}, not by uid ${myUid()}`);
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
}

/** Remove a stale socket or file at `path` (never a directory or another user's entry); absent is fine; within FS_CALL_MS. */
export function removeStale(path: string): Promise<void> {
  return withFsDeadline(removeStaleNow(path), `removing ${path}`);
}

async function removeStaleNow(path: string): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (!st) return;
  if (st.isDirectory()) throw new UnsafePathError(path, 'is a directory where a file was expected');
  if (st.uid !== myUid()) throw new UnsafePathError(path, `is owned by uid ${st.uid}`);
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Whether `path` is a regular file owned by us (a symlink or another user's file is refused). */
export async function isOwnRegularFile(path: string): Promise<boolean> {
  const st = await lstatOrUndefined(path);
  if (!st) return false;
  if (!st.isFile()) throw new UnsafePathError(path, st.isSymbolicLink() ? 'is a symbolic link' : 'is not a regular file');
  if (st.uid !== myUid()) throw new UnsafePathError(path, `is owned by uid ${st.uid}`);
  return true;
}

/** Create a new file exclusively (O_EXCL|O_NOFOLLOW), mode 0600. */
export function createExclusive(path: string): Promise<FileHandle> {
  return open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
}

/** Open an existing file for reading without following a symlink. */
export function openNoFollow(path: string): Promise<FileHandle> {
  return open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
}

/** Make the rename of an entry in `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write `text` to `path` atomically: a temp file (O_EXCL), fsync, rename, fsync of the directory. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${dirname(path)}/.${path.slice(path.lastIndexOf('/') + 1)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const fh = await createExclusive(tmp);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(path));
}
