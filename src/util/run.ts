// Running a program: argv arrays only (never a shell), a deadline on every
// call, and the escalation deadline -> SIGTERM -> SIGKILL in this one place.
//
// A call ends when its program exits, not when its pipes close: a grandchild
// that left the program's process group still holding stdout or stderr (QEMU
// `-daemonize` with `-D logfile` keeps stderr) would otherwise keep the call
// open forever. After the exit, output still in the pipes is read until none
// came for DRAIN_MS (at most DRAIN_LIMIT × DRAIN_MS), then the pipes are let go.
import { spawn } from 'node:child_process';

/** What a finished (or killed) program left behind. */
export interface RunResult {
  argv: readonly string[];
  exitCode: number | null;
  /** The signal that ended it, if any. */
  killedBy: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed because its deadline passed. */
  timedOut: boolean;
  /** Killed because the caller's signal aborted. */
  aborted: boolean;
  /** It ignored SIGTERM and had to be SIGKILLed. */
  forced: boolean;
  /** The program could not be started at all (ENOENT, EACCES...). */
  spawnError?: NodeJS.ErrnoException;
  ms: number;
}

/** How long output is still read after the program exited, when something else holds its pipes. */
export const DRAIN_MS = 500;

/** Output that keeps coming after the exit is read for at most this many drains in all. */
export const DRAIN_LIMIT = 10;

/** Options of runProcess. */
export interface RunOptions {
  /** Kill the program after this many ms (required: nothing runs without a deadline). */
  timeoutMs: number;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  input?: string;
  /** ms between SIGTERM and SIGKILL */
  killGraceMs?: number;
  /** Cap on captured output per stream (bytes); the rest is dropped. */
  maxOutput?: number;
  /** Called with each stdout chunk as it arrives. */
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  /** ms output is still read after the exit (default DRAIN_MS). */
  drainMs?: number;
}

/** Run `argv` to its end or its deadline; never rejects, never hangs past timeoutMs + killGraceMs + DRAIN_LIMIT × drainMs. */
export function runProcess(argv: readonly string[], opts: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const [file, ...args] = argv;
  if (file === undefined) throw new TypeError('runProcess: empty argv');
  const maxOutput = opts.maxOutput ?? 16 * 1024 * 1024;
  const grace = opts.killGraceMs ?? 2000;
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    let forced = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    let settled = false;
    const child = spawn(file, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      // Own process group, so a killed program's children go with it.
      detached: true,
    });
    const terminate = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup(child.pid, 'SIGTERM');
      killTimer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) {
          forced = true;
          killGroup(child.pid, 'SIGKILL');
        }
      }, grace);
    };
    const deadlineTimer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, Math.max(0, opts.timeoutMs));
    const onAbort = (): void => {
      aborted = true;
      terminate();
    };
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });

    // Output past maxOutput, counted so that the drain below sees it arrive.
    let dropped = 0;
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      if (stdout.length < maxOutput) stdout += c;
      else dropped += c.length;
      opts.onStdout?.(c);
    });
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < maxOutput) stderr += c;
      else dropped += c.length;
      opts.onStderr?.(c);
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    const finish = (exitCode: number | null, killedBy: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadlineTimer);
      if (killTimer) clearTimeout(killTimer);
      if (drainTimer) clearTimeout(drainTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      const result: RunResult = {
        argv, exitCode, killedBy, stdout, stderr, timedOut, aborted, forced,
        ms: performance.now() - started,
      };
      if (spawnError) result.spawnError = spawnError;
      resolve(result);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnError = err;
      if (child.pid === undefined) finish(null, null);
    });
    child.on('close', (code, sig) => finish(code, sig));
    // Exited, but the pipes may stay open (a grandchild holds them): read what
    // is there for a short while, then let the pipes go and settle.
    // The drain's timer fires in the loop's timers phase, before the poll
    // phase that reads the pipes: after the loop was held up (a busy
    // process, a starved machine) it would let go of output that is sitting
    // in the pipe, and a call that printed its answer would look empty. So
    // the pipes get one poll phase (setImmediate runs after it) before they
    // are let go, and output read then starts the wait again, up to
    // DRAIN_LIMIT times the drain in all.
    child.on('exit', (code, sig) => {
      const drainMs = opts.drainMs ?? DRAIN_MS;
      const giveUpAt = performance.now() + drainMs * DRAIN_LIMIT;
      const arm = (): void => {
        const seen = stdout.length + stderr.length + dropped;
        drainTimer = setTimeout(() => setImmediate(() => {
          if (settled) return;
          if (stdout.length + stderr.length + dropped !== seen && performance.now() < giveUpAt) return arm();
          for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy();
          finish(code, sig);
        }), drainMs);
      };
      arm();
    });
  });
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      /* already gone */
    }
  }
}

/** One line describing how a run ended, for error messages. */
export function describeRun(r: RunResult): string {
  const cmd = r.argv.join(' ');
  if (r.spawnError) return `${cmd}: cannot run (${r.spawnError.code ?? r.spawnError.message})`;
  if (r.timedOut) return `${cmd}: no answer within its deadline (killed${r.forced ? ' with SIGKILL' : ''})`;
  if (r.aborted) return `${cmd}: interrupted`;
  const tail = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ');
  if (r.killedBy) return `${cmd}: killed by ${r.killedBy}${tail ? `: ${tail}` : ''}`;
  return `${cmd}: exit ${r.exitCode}${tail ? `: ${tail}` : ''}`;
}
