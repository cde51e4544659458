// A host-wide lock file held with flock(1) on a file descriptor of this process: the lock is
// released when the descriptor is closed or the process ends, however it ends.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

/**
 * Takes an exclusive lock on PATH; when another process holds it, calls `onWait()` once and waits
 * up to `waitSeconds`. Returns the open descriptor (close it to release), or undefined when the
 * wait ran out. Throws when flock cannot run.
 */
export function holdLock(path, { waitSeconds, onWait = () => {} }) {
  const fd = openSync(path, 'a+');
  const flock = (args) => spawnSync('flock', [...args, '3'], { stdio: ['ignore', 'inherit', 'inherit', fd] });
  const now = flock(['--exclusive', '--nonblock']);
  if (now.error) {
    closeSync(fd);
    throw new Error(`flock: ${now.error.message} (it comes with util-linux)`);
  }
  if (now.status === 0) return fd;
  onWait();
  if (flock(['--exclusive', '--wait', String(waitSeconds)]).status === 0) return fd;
  closeSync(fd);
  return undefined;
}
