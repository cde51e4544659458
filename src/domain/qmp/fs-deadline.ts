// Every wait of the qmp driver on the file system has a deadline: a hung save
// directory (a dead NFS server, a failing disk) must not hang `stop`. The
// operation itself cannot be cancelled (it runs in libuv's thread pool); the
// caller stops waiting for it and decides what its unknown outcome means.
import { TimedOutError } from '../errors.js';

/** The default deadline of one file-system call (stat, readdir, rename, unlink, a small write), ms. */
export const FS_CALL_MS = 10_000;
/** The deadline of the fsync of a whole image, ms (a large image on a slow disk takes a while). */
export const FS_SYNC_MS = 120_000;

/** `op`'s result, or TimedOutError naming `what` when it has not settled within `ms`. */
export function withFsDeadline<T>(op: Promise<T>, what: string, ms: number = FS_CALL_MS, guest?: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const cut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimedOutError(`${what}: the file system did not answer within ${Math.round(ms / 1000)} s`, guest === undefined ? {} : { guest })), ms);
  });
  op.catch(() => undefined);
  return Promise.race([op, cut]).finally(() => clearTimeout(timer));
}
