// One rc.libvirt run at a time: an exclusive flock(2) on a lock file in the
// run directory, held for us by util-linux's flock(1). The kernel releases it
// when its holder ends, however it ends, so a crashed run never leaves a lock
// behind and no run ever decides whether another's lock is stale. The file
// also names its holder (pid, start time, command) for the message of a
// second run, which waits a bounded time, then gives up naming the holder.
//
// The file is never removed: a run waiting on the old file while a third
// creates a new one would give two holders.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processStartTime } from '../proc/identity.js';
import { formatMs } from '../util/deadline.js';
import { NotInstalledError, RunLockError } from './errors.js';

/** How long a second run waits for the lock by default. */
export const LOCK_WAIT_MS = 30_000;

/** The flock(1) program (util-linux). */
export const FLOCK = '/usr/bin/flock';

/** flock(1)'s exit code when the lock stays busy (our choice, --conflict-exit-code). */
const BUSY_EXIT = 75;

/** A held lock. */
export interface RunLock {
  path: string;
  release(): Promise<void>;
}

/** Who holds a lock file (as the file says). */
export interface LockHolder {
  pid: number;
  startTime: string;
  command: string;
}

/** Options of acquireRunLock. */
export interface AcquireLockOptions {
  runDir: string;
  command: string;
  signal: AbortSignal;
  waitMs?: number;
  /** Called once when the lock is busy and the run starts waiting. */
  onWait?: (holder: LockHolder | undefined) => void;
  /** flock(1) to use (tests). */
  flock?: string;
}

/** The lock file's path in a run directory. */
export function lockPath(runDir: string): string {
  return join(runDir, 'rc.libvirt.lock');
}

// Lock files this process holds (a second acquire in the same process would wait for itself).
const heldHere = new Set<string>();

/** Take the run lock, waiting up to `waitMs` for another run to end. */
export async function acquireRunLock(opts: AcquireLockOptions): Promise<RunLock> {
  const path = lockPath(opts.runDir);
  const waitMs = opts.waitMs ?? LOCK_WAIT_MS;
  if (heldHere.has(path)) throw new RunLockError(`${path}: this process already holds the run lock`);
  await mkdir(opts.runDir, { recursive: true, mode: 0o700 });
  const flock = opts.flock ?? FLOCK;
  // First without waiting: the usual case, one spawn.
  let got = await holdLock(flock, path, undefined, opts.signal);
  if (got === 'busy') {
    const holder = await readHolder(path);
    opts.onWait?.(holder);
    if (waitMs > 0) got = await holdLock(flock, path, waitMs, opts.signal);
    if (got === 'busy') {
      const who = (await readHolder(path)) ?? holder;
      const named = who ? `another rc.libvirt run (pid ${who.pid}, "${who.command}")` : 'another rc.libvirt run';
      throw new RunLockError(`${named} holds ${path}; gave up after waiting ${formatMs(waitMs)}`);
    }
  }
  const child = got;
  heldHere.add(path);
  const me: LockHolder = { pid: process.pid, startTime: (await processStartTime(process.pid)) ?? '?', command: opts.command };
  await writeFile(path, `${me.pid} ${me.startTime} ${me.command}\n`).catch(() => undefined);
  let released: Promise<void> | undefined;
  return {
    path,
    release: () => (released ??= releaseLock(path, child)),
  };
}

// Runs `flock --exclusive [--nonblock|--wait S] PATH cat` and writes a line into
// cat's stdin: cat runs only once the lock is ours, so the line coming back
// says so. The lock lasts as long as cat: until we close its stdin, or until
// this process ends and the kernel closes it.
function holdLock(flock: string, path: string, waitMs: number | undefined, signal: AbortSignal): Promise<ChildProcess | 'busy'> {
  if (signal.aborted) return Promise.reject(signal.reason);
  const how = waitMs === undefined ? ['--nonblock'] : ['--wait', (waitMs / 1000).toFixed(3)];
  return new Promise((resolve, reject) => {
    const child = spawn(flock, ['--exclusive', ...how, '--conflict-exit-code', String(BUSY_EXIT), path, 'cat'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let settled = false;
    const finish = (f: () => void): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = (): void =>
      finish(() => {
        child.kill('SIGKILL');
        reject(signal.reason);
      });
    signal.addEventListener('abort', onAbort, { once: true });
    child.stdin.on('error', () => undefined);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (!out.includes('\n')) return;
      finish(() => {
        // Held now. Neither the process nor its pipes keep this run alive; release() ends them.
        child.stdout.removeAllListeners('data');
        child.stdout.resume();
        child.unref();
        for (const s of [child.stdin, child.stdout, child.stderr] as unknown as { unref?: () => void }[]) s.unref?.();
        resolve(child);
      });
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      finish(() =>
        reject(
          e.code === 'ENOENT'
            ? new NotInstalledError(`${flock} is missing: rc.libvirt takes its run lock with flock(1) from util-linux`)
            : new RunLockError(`${flock}: ${e.message}`),
        ),
      ),
    );
    child.on('close', (code) =>
      finish(() => {
        if (code === BUSY_EXIT) resolve('busy');
        else reject(new RunLockError(`cannot lock ${path}: ${flock} exited ${code}${err.trim() ? `: ${err.trim()}` : ''}`));
      }),
    );
    child.stdin.write('locked\n');
  });
}

async function releaseLock(path: string, child: ChildProcess): Promise<void> {
  // The holder's line goes first, while the lock is still ours.
  await writeFile(path, '').catch(() => undefined);
  const closed = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('close', () => resolve());
  });
  child.stdin?.end();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 2000)));
  if ((await Promise.race([closed, late])) === 'late') child.kill('SIGKILL');
  clearTimeout(timer);
  heldHere.delete(path);
}

/** The holder the lock file names, when it names a live process. */
async function readHolder(path: string): Promise<LockHolder | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const m = /^(\d+) (\S+) ?(.*)$/m.exec(text);
  if (!m) return undefined;
  const holder: LockHolder = { pid: Number(m[1]), startTime: m[2] as string, command: m[3] ?? '' };
  const start = await processStartTime(holder.pid);
  if (start === undefined || (holder.startTime !== '?' && start !== holder.startTime)) return undefined;
  return holder;
}
