// One rc.libvirt run at a time: an exclusive flock(2) on a lock file in the
// run directory. The kernel releases it when its holder ends, however it
// ends, so a crashed run never leaves a lock behind and no run ever decides
// whether another's lock is stale.
//
// The file is opened by this process itself, never through a symlink
// (O_NOFOLLOW), created 0600, and used only when it is a regular file of ours
// with one link; flock(1) locks that open file (it gets the descriptor as its
// fd 3 and exits), so the lock belongs to our own descriptor: it lasts until
// release() closes it or this process ends. No holder process exists that a
// Ctrl-C in the terminal (or anything else) could end before the run has
// ended. A file that is not safe to use (a symlink, a FIFO, another owner's
// file, a hard link) is moved aside, never followed or written, and a fresh
// one created: the run says so loudly.
//
// The file names its holder: `PID STARTTIME COMMAND UNTIL`, UNTIL the epoch
// ms by which the holder's run ends at the latest (its bound, `-` when none),
// written and read through the descriptor. A second run waits a bounded time
// and then gives up naming the holder, except a shutdown command (stop,
// shutdown, guests_shutdown), which never gives up on the guests: it asks a
// `start` or `guests_reboot` holder to end (SIGTERM to its checked pid) and
// waits up to TAKEOVER_WAIT_MS, waits for any other holder up to its UNTIL,
// and when the holder is still there after that, goes on without the lock.
//
// The file is never removed: a run waiting on the old file while a third
// creates a new one would give two holders.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, readlink, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import { STOP_MARGIN_MS } from '../guests/ladder.js';
import { processStartTime } from '../proc/identity.js';
import { signalIfOurs } from '../proc/stop.js';
import { formatMs } from '../util/deadline.js';
import { ensureOwnDir, UnsafeDirError } from '../util/own-dir.js';
import { NotInstalledError, RunLockError } from './errors.js';
import { randomHex } from '../util/random-hex.js';

/** How long a second run waits for the lock by default. */
export const LOCK_WAIT_MS = 30_000;

/** The flock(1) program (util-linux). */
export const FLOCK = '/usr/bin/flock';

/** flock(1)'s exit code when the lock stays busy (our choice, --conflict-exit-code). */
const BUSY_EXIT = 75;

/** The commands that run at host shutdown: they never give up on the guests because of the lock. */
export const SHUTDOWN_COMMANDS: readonly string[] = ['stop', 'shutdown', 'guests_shutdown'];

/** Holders a shutdown command asks to end (SIGTERM): they bring their guests to a safe state and end. */
export const INTERRUPTIBLE_COMMANDS: readonly string[] = ['start', 'guests_reboot'];

/** How long a shutdown command waits for a holder it asked to end. */
export const TAKEOVER_WAIT_MS = 60_000;

/** Time a run spends besides its guests' timeouts and daemons: the ping and listing, networks, modprobe. */
export const RUN_MARGIN_MS = 60_000;

/** A held lock (or, for a shutdown command that went on without it, `held: false`). */
export interface RunLock {
  path: string;
  held: boolean;
  /** What was wrong with the lock that the run worked around (a planted symlink moved aside, a holder that did not end): the run reports them as errors. */
  problems: string[];
  /** What was set right on the way, worth a warning (the run directory's owner or mode taken back). */
  notes?: string[];
  release(): Promise<void>;
}

/** Who holds a lock file (as the file says). */
export interface LockHolder {
  pid: number;
  startTime: string;
  command: string;
  /** Epoch ms by which the holder's run ends at the latest, when it said. */
  until?: number;
}

/** Options of acquireRunLock. */
export interface AcquireLockOptions {
  runDir: string;
  command: string;
  signal: AbortSignal;
  /** How long a run that is not a shutdown command waits. */
  waitMs?: number;
  /** How long this run may take at most (written for a waiting run); undefined: no bound. */
  boundMs?: number;
  /** How long a shutdown command waits for a holder that names no bound (default: TAKEOVER_WAIT_MS). */
  unboundedHolderWaitMs?: number;
  /** How long a shutdown command waits for a holder it asked to end (default TAKEOVER_WAIT_MS). */
  takeoverWaitMs?: number;
  /** Called once when the lock is busy and the run starts waiting. */
  onWait?: (holder: LockHolder | undefined, how: string) => void;
  /** flock(1) to use (tests). */
  flock?: string;
}

/** The lock file's path in a run directory. */
export function lockPath(runDir: string): string {
  return join(runDir, 'rc.libvirt.lock');
}

/**
 * How long a run of `command` may take at most, for the lock line a waiting shutdown command reads:
 * stop, shutdown, guests_shutdown: TIMEOUT + STOP_MARGIN_MS + 3 × DAEMON_TIMEOUT + RUN_MARGIN_MS;
 * restart: that + 3 × DAEMON_TIMEOUT (the daemons' start); soft_restart: 6 × DAEMON_TIMEOUT + RUN_MARGIN_MS.
 * undefined for the commands a shutdown command asks to end instead.
 */
export function runBoundMs(command: string, settings: Pick<Settings, 'timeout' | 'daemonTimeout'>): number | undefined {
  const daemons = 3 * settings.daemonTimeout * 1000;
  const stopping = settings.timeout * 1000 + STOP_MARGIN_MS + daemons + RUN_MARGIN_MS;
  if (SHUTDOWN_COMMANDS.includes(command)) return stopping;
  if (command === 'restart') return stopping + daemons;
  if (command === 'soft_restart') return 2 * daemons + RUN_MARGIN_MS;
  return undefined;
}

// Lock files this process holds (a second acquire in the same process would wait for itself).
const heldHere = new Set<string>();

/** Take the run lock (see the top of this file for who waits how long). */
export async function acquireRunLock(opts: AcquireLockOptions): Promise<RunLock> {
  const path = lockPath(opts.runDir);
  if (heldHere.has(path)) throw new RunLockError(`${path}: this process already holds the run lock`);
  const problems: string[] = [];
  const notes: string[] = [];
  const shutdown = SHUTDOWN_COMMANDS.includes(opts.command);
  let file: FileHandle;
  try {
    file = await openLockFile(opts.runDir, path, problems, notes);
  } catch (err) {
    if (!shutdown || !(err instanceof RunLockError)) throw err;
    problems.push(`${err.message}; ${opts.command} goes on without the lock so that the guests are handled`);
    return { path, held: false, problems, notes, release: async () => undefined };
  }
  try {
    const flock = opts.flock ?? FLOCK;
    // First without waiting: the usual case, one spawn.
    let got = await lockFd(flock, file, path, undefined, opts.signal);
    if (got === 'busy') {
      const holder = await readHolder(file);
      const named = holder ? `another rc.libvirt run (pid ${holder.pid}, "${holder.command}")` : 'another rc.libvirt run';
      if (!shutdown) {
        const waitMs = opts.waitMs ?? LOCK_WAIT_MS;
        opts.onWait?.(holder, `waiting up to ${formatMs(waitMs)} for ${named} to finish`);
        if (waitMs > 0) got = await lockFd(flock, file, path, waitMs, opts.signal);
        if (got === 'busy') {
          const who = (await readHolder(file)) ?? holder;
          const now = who ? `another rc.libvirt run (pid ${who.pid}, "${who.command}")` : named;
          throw new RunLockError(`${now} holds ${path}; gave up after waiting ${formatMs(waitMs)}`);
        }
      } else {
        const waitMs = await shutdownWait(holder, named, opts);
        if (waitMs > 0) got = await lockFd(flock, file, path, waitMs, opts.signal);
        if (got === 'busy') {
          const who = (await readHolder(file)) ?? holder;
          const still = who ? `another rc.libvirt run (pid ${who.pid}, "${who.command}")` : named;
          problems.push(`${still} still holds ${path} after ${formatMs(waitMs)}: ${opts.command} goes on without the lock so that the guests are handled`);
          return { path, held: false, problems, notes, release: async () => void (await file.close().catch(() => undefined)) };
        }
      }
    }
  } catch (err) {
    await file.close().catch(() => undefined);
    throw err;
  }
  heldHere.add(path);
  const startTime = (await processStartTime(process.pid)) ?? '?';
  const until = opts.boundMs === undefined ? '-' : String(Date.now() + opts.boundMs);
  await writeLine(file, `${process.pid} ${startTime} ${opts.command} ${until}\n`).catch(() => undefined);
  let released: Promise<void> | undefined;
  return {
    path,
    held: true,
    problems,
    notes,
    release: () => (released ??= releaseLock(path, file)),
  };
}

// A shutdown command found the lock busy: ask a start or guests_reboot holder
// to end, or wait for the holder's own bound. Resolves with how long to wait.
async function shutdownWait(holder: LockHolder | undefined, named: string, opts: AcquireLockOptions): Promise<number> {
  if (holder && INTERRUPTIBLE_COMMANDS.includes(holder.command)) {
    const waitMs = opts.takeoverWaitMs ?? TAKEOVER_WAIT_MS;
    const asked = holder.startTime !== '?' && (await signalIfOurs(holder.pid, 'SIGTERM', async () => (await processStartTime(holder.pid)) === holder.startTime));
    opts.onWait?.(holder, asked
      ? `${named} holds the run lock: asked it to end (SIGTERM); waiting up to ${formatMs(waitMs)} for it to bring its guests to a safe state`
      : `${named} holds the run lock and could not be asked to end; waiting up to ${formatMs(waitMs)}`);
    return waitMs;
  }
  if (holder?.until !== undefined) {
    const waitMs = Math.max(0, holder.until - Date.now());
    opts.onWait?.(holder, `waiting up to ${formatMs(waitMs)} (its own bound) for ${named} to finish; what it leaves active is handled after it`);
    return waitMs;
  }
  const waitMs = opts.unboundedHolderWaitMs ?? TAKEOVER_WAIT_MS;
  opts.onWait?.(holder, `waiting up to ${formatMs(waitMs)} for ${named} to finish; what it leaves active is handled after it`);
  return waitMs;
}

/** The flags the lock file is opened with: never through a symlink, never blocking on a FIFO. */
const OPEN_FLAGS = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

// Open the lock file safely: a run directory that is ours, mode 0700 (one that
// another account owned or could write is taken back, as every directory of
// ours is, and `notes` says so; a symlink or a file in its place is refused), and
// in it a regular file of ours with one link, opened without following a
// symlink. Anything else in its place is moved aside (rename never follows) and
// a fresh file made; `problems` says what was found.
async function openLockFile(runDir: string, path: string, problems: string[], notes: string[]): Promise<FileHandle> {
  try {
    const fixed = await ensureOwnDir(runDir);
    if (fixed) notes.push(fixed);
  } catch (err) {
    if (err instanceof UnsafeDirError) throw new RunLockError(`${err.message}: the run lock is not taken through it`);
    throw err;
  }
  const me = process.geteuid?.() ?? 0;
  for (let attempt = 0; attempt < 3; attempt++) {
    let file: FileHandle | undefined;
    try {
      file = await open(path, OPEN_FLAGS, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOOP') throw new RunLockError(`cannot open ${path}: ${(err as Error).message}`);
    }
    const st = await file?.stat();
    const bad = !file || !st ? `a symlink (to ${await readlink(path).catch(() => '?')})`
      : !st.isFile() ? 'not a regular file'
      : st.uid !== me ? `owned by uid ${st.uid}, not ${me}`
      : st.nlink !== 1 ? `a file with ${st.nlink} links`
      : undefined;
    if (!bad) return file!;
    await file?.close();
    const aside = `${path}.unsafe-${Date.now()}-${randomHex(6)}`;
    try {
      await rename(path, aside);
      problems.push(`${path} was ${bad}: moved aside to ${aside}, never followed or written; a fresh lock file was made`);
    } catch (err) {
      // Another run moved it first: look again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new RunLockError(`${path} is ${bad} and cannot be moved aside: ${(err as Error).message}`);
    }
  }
  throw new RunLockError(`${path}: something keeps putting an unsafe file in its place`);
}

// Runs `flock --exclusive [--nonblock|--wait S] 3` with the lock file as its
// fd 3: it locks our open file and exits 0 (or BUSY_EXIT). The lock belongs
// to the open file, so it stays ours after flock has exited. flock runs in a
// process group of its own: a Ctrl-C in the terminal does not end it.
function lockFd(flock: string, file: FileHandle, path: string, waitMs: number | undefined, signal: AbortSignal): Promise<'held' | 'busy'> {
  if (signal.aborted) return Promise.reject(signal.reason);
  const how = waitMs === undefined ? ['--nonblock'] : ['--wait', (waitMs / 1000).toFixed(3)];
  return new Promise((resolve, reject) => {
    const child = spawn(flock, ['--exclusive', ...how, '--conflict-exit-code', String(BUSY_EXIT), '3'], {
      stdio: ['ignore', 'ignore', 'pipe', file.fd],
      detached: true,
      // The C locale: flock reads no locale files (its few messages go into ours, in English anyway).
      env: { ...process.env, LC_ALL: 'C' },
    });
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
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        reject(signal.reason);
      });
    signal.addEventListener('abort', onAbort, { once: true });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => (err += d));
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
        if (code === 0) resolve('held');
        else if (code === BUSY_EXIT) resolve('busy');
        else reject(new RunLockError(`cannot lock ${path}: ${flock} exited ${code}${err.trim() ? `: ${err.trim()}` : ''}`));
      }),
    );
  });
}

/** Replace the file's content with `line`, through the descriptor. */
async function writeLine(file: FileHandle, line: string): Promise<void> {
  await file.truncate(0);
  await file.write(line, 0, 'utf8');
}

async function releaseLock(path: string, file: FileHandle): Promise<void> {
  // The holder's line goes first, while the lock is still ours; closing the descriptor frees the lock.
  await file.truncate(0).catch(() => undefined);
  await file.close().catch(() => undefined);
  heldHere.delete(path);
}

/** The holder the lock file names, when it names a live process. */
async function readHolder(file: FileHandle): Promise<LockHolder | undefined> {
  const buf = Buffer.alloc(512);
  const { bytesRead } = await file.read(buf, 0, buf.length, 0).catch(() => ({ bytesRead: 0 }));
  const text = buf.subarray(0, bytesRead).toString('utf8');
  const m = /^(\d+) (\S+) ?(\S*)(?: (\d+|-))?/m.exec(text);
  if (!m) return undefined;
  const holder: LockHolder = { pid: Number(m[1]), startTime: m[2] as string, command: m[3] ?? '' };
  if (m[4] !== undefined && m[4] !== '-') holder.until = Number(m[4]);
  const start = await processStartTime(holder.pid);
  if (start === undefined || (holder.startTime !== '?' && start !== holder.startTime)) return undefined;
  return holder;
}
