// rc.libvirt's own directories (run, state, the qmp save directory) belong to
// the user rc.libvirt runs as (root), mode 0700, whatever VIRTUSER is: no other
// account can put a symlink or a file under a name root is about to write.
// Each is opened without following a symlink (O_NOFOLLOW|O_DIRECTORY) and
// fixed through that handle, so a link swapped in is refused, never followed.
import { constants } from 'node:fs';
import { lstat, mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A path that is not a real directory where one of ours must be (a symlink, a file). */
export class UnsafeDirError extends Error {
  constructor(readonly path: string, problem: string) {
    super(`${path} ${problem}: refused (not followed, nothing written there)`);
    this.name = 'UnsafeDirError';
  }
}

/** The owner and mode our directories must have: the running user and group, 0700. */
export function ownIds(): { uid: number; gid: number } {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}

/** Create `dir` (mode 0700) or check the one there and fix its owner and mode; returns what was fixed, in words, or undefined. Throws UnsafeDirError for a symlink or a non-directory. */
export async function ensureOwnDir(dir: string): Promise<string | undefined> {
  await mkdir(dirname(dir), { recursive: true, mode: 0o755 });
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  let fh;
  try {
    fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    // O_DIRECTORY|O_NOFOLLOW on a symlink fails ENOTDIR (or ELOOP): lstat tells which it is.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    const link = await lstat(dir).then((st) => st.isSymbolicLink(), () => false);
    throw new UnsafeDirError(dir, link ? 'is a symbolic link' : 'is not a directory');
  }
  try {
    const st = await fh.stat();
    const { uid, gid } = ownIds();
    const mode = st.mode & 0o7777;
    if (st.uid === uid && st.gid === gid && mode === 0o700) return undefined;
    if (st.uid !== uid || st.gid !== gid) await fh.chown(uid, gid);
    if (mode !== 0o700) await fh.chmod(0o700);
    return `${dir} was owner ${st.uid}:${st.gid} mode ${mode.toString(8).padStart(4, '0')}: set to ${uid}:${gid} mode 0700`;
  } finally {
    await fh.close();
  }
}
