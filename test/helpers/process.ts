// Process plumbing for the integration-test helpers: run a program with an
// argv array and a timeout, look at and end processes by PID. No shells.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** What a finished command left: it is data, a non-zero exit does not throw. */
export interface CommandResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Options of `runCommand`. */
export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Called with the child as soon as it is spawned (its pid, to signal it). */
  onSpawn?: (child: ChildProcess) => void;
  /** Called with each piece of its stdout as it comes. */
  onStdout?: (data: string) => void;
}

// Resolves after `ms` milliseconds.
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Runs `file` with `args` (argv, never a shell), killing it with SIGKILL after the timeout.
export function runCommand(file: string, args: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const command = [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    opts.onSpawn?.(child);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      opts.onStdout?.(d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ command, code, signal, stdout, stderr, timedOut });
    });
  });
}

// Describes a failed command in one message: the command, how it ended, its stderr.
export function describeFailure(r: CommandResult): string {
  const how = r.timedOut ? 'timed out' : r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`;
  const err = r.stderr.trim() || r.stdout.trim();
  return `${r.command} ${how}${err ? `: ${err}` : ''}`;
}

// Runs a command like `runCommand` and throws unless it exits 0; returns its stdout.
export async function runChecked(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await runCommand(file, args, opts);
  if (r.code !== 0) throw new Error(describeFailure(r));
  return r.stdout;
}

// Finds a program on PATH or in the sbin folders (root's tools), or undefined.
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** A process's identity: its PID plus its start time, so a reused PID is not taken for it. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

// Reads state, start time and name of a PID from /proc, or undefined when it is gone.
function readStat(pid: number): { state: string; startTime: string; comm: string } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // proc(5): "pid (comm) state ...", comm may hold spaces and parentheses.
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  return { comm: stat.slice(open + 1, close), state: fields[0] ?? '', startTime: fields[19] ?? '' };
}

// Tells whether a PID runs (a zombie waiting to be reaped counts as gone).
export function isPidAlive(pid: number): boolean {
  const s = readStat(pid);
  return s !== undefined && s.state !== 'Z' && s.state !== 'X';
}

// Captures a running PID's identity, or undefined when it is not running.
export function identifyPid(pid: number): ProcessIdentity | undefined {
  const s = readStat(pid);
  if (!s || s.state === 'Z' || s.state === 'X') return undefined;
  return { pid, startTime: s.startTime };
}

// Tells whether the process with this identity still runs (not a new one on the same PID).
export function isSameProcessAlive(id: ProcessIdentity): boolean {
  const s = readStat(id.pid);
  return s !== undefined && s.state !== 'Z' && s.state !== 'X' && s.startTime === id.startTime;
}

// Lists the running PIDs whose process name (comm) is exactly `comm`.
export function findPidsByComm(comm: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const s = readStat(pid);
    if (s && s.comm === comm.slice(0, 15) && s.state !== 'Z' && s.state !== 'X') pids.push(pid);
  }
  return pids;
}

// Polls `probe` every `intervalMs` until it returns something other than undefined/false, or throws after the deadline.
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  opts: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const start = performance.now();
  const interval = opts.intervalMs ?? 100;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (performance.now() - start >= opts.timeoutMs) {
      throw new Error(`timed out after ${(opts.timeoutMs / 1000).toFixed(1)} s waiting for ${what}`);
    }
    await sleep(interval);
  }
}

// Ends a process by identity: SIGTERM, wait up to graceMs, then SIGKILL; resolves once it is gone.
export async function terminateProcess(id: ProcessIdentity, graceMs = 10_000): Promise<'gone' | 'terminated' | 'killed'> {
  if (!isSameProcessAlive(id)) return 'gone';
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(id.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  signal('SIGTERM');
  const start = performance.now();
  while (performance.now() - start < graceMs) {
    if (!isSameProcessAlive(id)) return 'terminated';
    await sleep(50);
  }
  if (!isSameProcessAlive(id)) return 'terminated';
  signal('SIGKILL');
  await waitFor(`PID ${id.pid} to die after SIGKILL`, () => !isSameProcessAlive(id), { timeoutMs: 10_000, intervalMs: 50 });
  return 'killed';
}

// Makes a fresh temporary folder whose paths stay short enough for unix sockets.
export async function makeTempDir(prefix: string): Promise<string> {
  const base = tmpdir().length <= 60 ? tmpdir() : '/tmp';
  return mkdtemp(join(base, prefix));
}
