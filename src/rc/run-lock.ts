// One rc.libvirt run at a time: a lock file in the run directory holding the
// holder's pid, its start time (so a reused pid is not taken for the holder)
// and its command. A second run waits a bounded time, then gives up naming the holder.
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitError } from '../cli/errors.js';
import { hasEnded, parseProcStat } from '../daemons/proc-stat.js';
import { EXIT } from '../cli/exit-codes.js';
import { formatMs, now, sleep } from '../util/deadline.js';

/** How long a second run waits for the lock by default. */
export const LOCK_WAIT_MS = 30_000;

/** A held lock. */
export interface RunLock {
  path: string;
  release(): Promise<void>;
}

/** Who holds a lock file. */
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
  onWait?: (holder: LockHolder) => void;
  pollMs?: number;
}

/** The lock file's path in a run directory. */
export function lockPath(runDir: string): string {
  return join(runDir, 'rc.libvirt.lock');
}

/** Take the run lock, waiting up to `waitMs` for another run; a stale lock (dead holder) is removed. */
export async function acquireRunLock(opts: AcquireLockOptions): Promise<RunLock> {
  const path = lockPath(opts.runDir);
  const waitMs = opts.waitMs ?? LOCK_WAIT_MS;
  await mkdir(opts.runDir, { recursive: true, mode: 0o755 });
  const me: LockHolder = { pid: process.pid, startTime: (await processStartTime(process.pid)) ?? '?', command: opts.command };
  const started = now();
  let told = false;
  for (;;) {
    try {
      const fh = await open(path, 'wx', 0o644);
      try {
        await fh.writeFile(`${me.pid} ${me.startTime} ${me.command}\n`);
      } finally {
        await fh.close();
      }
      return { path, release: () => releaseLock(path, me) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = await readHolder(path);
    if (holder === 'gone') continue;
    if (holder === 'stale') {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (holder.pid === process.pid) {
      throw new ExitError(EXIT.failure, `${path}: this process already holds the run lock`);
    }
    if (!told) {
      told = true;
      opts.onWait?.(holder);
    }
    if (now() - started >= waitMs) {
      throw new ExitError(
        EXIT.failure,
        `another rc.libvirt run (pid ${holder.pid}, "${holder.command}") holds ${path}; gave up after waiting ${formatMs(waitMs)}`,
      );
    }
    await sleep(opts.pollMs ?? 250, opts.signal);
  }
}

async function releaseLock(path: string, me: LockHolder): Promise<void> {
  const holder = await readHolder(path);
  if (typeof holder === 'object' && holder.pid === me.pid) await unlink(path).catch(() => undefined);
}

// 'gone': the file vanished; 'stale': its holder is dead (or the file is not a lock file).
async function readHolder(path: string): Promise<LockHolder | 'gone' | 'stale'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return 'gone';
  }
  const m = /^(\d+) (\S+) ?(.*)$/m.exec(text);
  if (!m) {
    // Being written right now, or garbage: give a writer a moment, then call it stale.
    await sleep(100);
    const again = await readFile(path, 'utf8').catch(() => undefined);
    if (again === undefined) return 'gone';
    if (again !== text) return readHolder(path);
    return 'stale';
  }
  const holder: LockHolder = { pid: Number(m[1]), startTime: m[2] as string, command: m[3] ?? '' };
  const start = await processStartTime(holder.pid);
  if (start === undefined) return 'stale';
  if (holder.startTime !== '?' && start !== holder.startTime) return 'stale';
  return holder;
}

/** A live process's start time in clock ticks since boot (/proc/PID/stat field 22), or undefined when it does not run. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
    return stat && !hasEnded(stat) ? stat.startTime : undefined;
  } catch {
    return undefined;
  }
}
