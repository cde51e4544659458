// Free space of a save directory (statfs), for the plan's check of what fits.
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errorMessage } from '../util/error-message.js';
import { deadline } from '../util/deadline.js';

/** What statfs says of a directory: bytes available (`bavail`, leaving the file system's reserve alone) and its size. */
export interface FreeSpace {
  freeBytes?: number;
  totalBytes?: number;
  /** The directory that was measured (the nearest existing one, when the save directory does not exist yet). */
  measured?: string;
  error?: string;
}

/** How long a statfs may take (a dead network file system hangs it). */
export const STATFS_TIMEOUT_MS = 5000;

/** statfs of `dir`, or of its nearest existing parent (drivers create the directory on the first save). */
export async function freeSpace(dir: string, signal: AbortSignal): Promise<FreeSpace> {
  const dl = deadline(STATFS_TIMEOUT_MS, signal);
  try {
    let path = dir;
    for (;;) {
      try {
        const st = await raceAbort(statfs(path), dl.signal);
        // rc.libvirt runs as root: the reserved blocks are usable too, but keep them for the system.
        return { freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize, measured: path };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' || dirname(path) === path) return { error: `${path}: ${errorMessage(err)}` };
        path = dirname(path);
      }
    }
  } finally {
    dl.clear();
  }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(new Error('statfs did not answer in time'));
      return;
    }
    const onAbort = (): void => reject(new Error('statfs did not answer in time'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
