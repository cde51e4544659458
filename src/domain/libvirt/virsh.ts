// Running virsh: argv arrays only, LC_ALL=C, `-c URI`, a deadline on every
// call, and its failures classified into the domain errors (the virsh
// message kept). A hung libvirtd never hangs us: the call is killed at its
// deadline and reported as "not reachable".
import { runProcess, describeRun, type RunResult } from '../../util/run.js';
import { anySignal, formatMs, now, sleep } from '../../util/deadline.js';
import { randomHex } from '../../util/random-hex.js';
import {
  DomainError,
  GuestNotFoundError,
  InterruptedError,
  NotReachableError,
  OperationRefusedError,
  ProtocolError,
  TimedOutError,
} from '../errors.js';
import type { Log } from '../../util/log.js';

/** How to reach virsh and a libvirt connection. */
export interface VirshConfig {
  uri: string;
  /** The virsh program (default `virsh`, found on PATH). */
  virsh?: string;
  /** Deadline of a call that has no deadline of its own (ms). */
  callTimeoutMs?: number;
  log?: Log;
  /** ms between SIGTERM and SIGKILL of a virsh past its deadline. */
  killGraceMs?: number;
  /** The watchdog of a long call counts libvirtd as hung only when no `virsh version` answered for this long (ms, default WATCHDOG_WINDOW_MS). */
  hungWindowMs?: number;
}

/** Default window of the long calls' watchdog: at least 15 s without any answer before libvirtd counts as hung. */
export const WATCHDOG_WINDOW_MS = 20_000;
/** After a `virsh version` of the watchdog that got no answer, the next is asked this soon (ms). */
const WATCHDOG_RETRY_MS = 1000;

/** One virsh call. */
export interface VirshCall {
  signal: AbortSignal;
  /** This call's deadline (ms); default the runner's callTimeoutMs. */
  timeoutMs?: number;
  /**
   * What a call killed at its deadline means: `not-reachable` (the daemon
   * did not answer a quick call; the default) or `timed-out` (a long
   * operation such as a save ran past its own deadline).
   */
  onDeadline?: 'not-reachable' | 'timed-out';
  /** The guest (or network) the call is about, for the error. */
  guest?: string;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  /**
   * For long calls: while it runs, ask `virsh version` every callTimeoutMs
   * (each may take up to hungWindowMs); when none has answered for
   * hungWindowMs, kill the call and fail it "not reachable".
   */
  watchdog?: boolean;
}

/** A virsh runner bound to one URI. */
export interface Virsh {
  readonly uri: string;
  readonly program: string;
  readonly callTimeoutMs: number;
  /** Run `virsh -c URI ARGS...`; resolves with stdout, rejects with a DomainError. */
  run(args: readonly string[], call: VirshCall): Promise<string>;
  /** The full argv a call runs (for logs and for long-running streams). */
  argv(args: readonly string[]): string[];
  /** The environment virsh runs with (LC_ALL=C). */
  env(): NodeJS.ProcessEnv;
}

/** Default deadline of one virsh call. */
export const DEFAULT_CALL_TIMEOUT_MS = 15_000;

/** A virsh runner for `cfg.uri`. */
export function createVirsh(cfg: VirshConfig): Virsh {
  const program = cfg.virsh ?? 'virsh';
  const callTimeoutMs = cfg.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const argv = (args: readonly string[]): string[] => [program, '-q', '-c', cfg.uri, ...args];
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, LC_ALL: 'C', LANG: 'C', LANGUAGE: 'C' });
  // One watchdog for every long call of this runner in flight: libvirtd's answer is the connection's, not a call's.
  const watchdog = createWatchdog(() => self, callTimeoutMs, cfg.hungWindowMs ?? WATCHDOG_WINDOW_MS);
  const self: Virsh = {
    uri: cfg.uri,
    program,
    callTimeoutMs,
    argv,
    env,
    async run(args, call) {
      if (call.signal.aborted) {
        throw new InterruptedError(`virsh ${args.join(' ')}: interrupted before it started`, { cause: call.signal.reason, guest: call.guest });
      }
      const timeoutMs = call.timeoutMs ?? callTimeoutMs;
      const full = argv(args);
      cfg.log?.debug(`run: ${full.map(shortened).join(' ')}`);
      const stop = new AbortController();
      const both = anySignal(call.signal, stop.signal);
      let silent: DomainError | undefined;
      const unwatch = call.watchdog
        ? watchdog.add((err) => {
            silent = err;
            stop.abort(err);
          })
        : () => undefined;
      try {
        const r = await runProcess(full, {
          timeoutMs,
          signal: both.signal,
          env: env(),
          killGraceMs: cfg.killGraceMs ?? 1000,
          onStdout: call.onStdout,
          onStderr: call.onStderr,
        });
        if (!r.timedOut && !r.aborted && !r.spawnError && r.exitCode === 0) return r.stdout;
        if (silent && !call.signal.aborted) {
          throw new NotReachableError(`libvirt (${cfg.uri}) stopped answering during ${args.join(' ')}: ${silent.message}`, { guest: call.guest, cause: silent });
        }
        throw classifyVirshFailure(r, { uri: cfg.uri, timeoutMs, onDeadline: call.onDeadline ?? 'not-reachable', guest: call.guest, signal: call.signal });
      } finally {
        unwatch();
        both.clear();
        if (!stop.signal.aborted) stop.abort();
      }
    },
  };
  return self;
}

/** What runFollowedBy learnt: `then`'s output, or undefined when it failed (the first call succeeded). */
export interface FollowedBy {
  then: string | undefined;
}

/** What an older virsh (its `echo` without `--err`) says of the command string; it then runs none of it. */
const NO_ECHO_ERR = /command 'echo' doesn't support option --err/;

/**
 * Run `args` and then `then` in one virsh process: the state after a start
 * without a process of its own. virsh runs every command of the string and
 * exits with the last one's status, so a marker written to stderr (`echo
 * --err`) between the two tells which errors are the first call's: its
 * failure is thrown as if it had run alone, `then`'s failure only leaves
 * `then` undefined. Arguments must need no quoting in virsh's command string
 * (options and UUIDs). Resolves with undefined, and runs nothing, on a virsh
 * whose `echo` has no `--err` (the caller then runs the two apart).
 */
export async function runFollowedBy(virsh: Virsh, args: readonly string[], then: readonly string[], call: VirshCall): Promise<FollowedBy | undefined> {
  const mark = `@@rcl-${randomHex(6)}@@`;
  const line = `${args.join(' ')}; echo --err ${mark}; echo ${mark}; ${then.join(' ')}`;
  let stderr = '';
  let stdout = '';
  const collect = { onStdout: (c: string) => void (stdout += c), onStderr: (c: string) => void (stderr += c) };
  let failure: unknown;
  try {
    await virsh.run([line], { ...call, ...collect });
  } catch (err) {
    failure = err;
  }
  const at = stderr.indexOf(`error: ${mark}\n`);
  if (at < 0) {
    if (failure === undefined) throw new ProtocolError(`virsh ${line}: no marker on stderr after ${args.join(' ')}`, { guest: call.guest });
    if (NO_ECHO_ERR.test(stderr)) return undefined;
    // Ended before the first call was through (not reachable, deadline, interrupted): its failure, named as itself.
    if (failure instanceof Error) failure.message = failure.message.split(line).join(args.join(' '));
    throw failure;
  }
  const own = stderr.slice(0, at);
  // virsh reports a failed command with `error:` lines; anything else it printed is not a failure.
  if (/^error:/m.test(own)) {
    const r: RunResult = { argv: virsh.argv(args), exitCode: 1, killedBy: null, stdout: '', stderr: own, timedOut: false, aborted: false, forced: false, ms: 0 };
    throw classifyVirshFailure(r, { uri: virsh.uri, timeoutMs: call.timeoutMs ?? virsh.callTimeoutMs, onDeadline: call.onDeadline ?? 'not-reachable', guest: call.guest, signal: call.signal });
  }
  const out = stdout.indexOf(mark);
  return { then: failure === undefined && out >= 0 ? stdout.slice(out + mark.length) : undefined };
}

/**
 * The watchdog of a runner's long calls: while at least one runs, one `virsh
 * version` every `everyMs` (one at a time, each within `windowMs`; a second
 * after one that got no answer), however many calls are in flight. A call is
 * told it is silent (once; then it is forgotten) when a version fails "not
 * reachable" and nothing answered for `windowMs`, counted from its own start
 * or from the last answer, whichever is later (a slow answer is an answer).
 * When the last call ends the loop stops, a version in flight included.
 */
function createWatchdog(v: () => Virsh, everyMs: number, windowMs: number): { add(onSilent: (err: DomainError) => void): () => void } {
  const calls = new Map<symbol, { since: number; onSilent: (err: DomainError) => void }>();
  let lastAnswer = -Infinity;
  let stop: AbortController | undefined;
  const loop = async (signal: AbortSignal): Promise<void> => {
    let pause = everyMs;
    while (!signal.aborted) {
      try {
        await sleep(pause, signal);
        await v().run(['version'], { signal, timeoutMs: windowMs });
        lastAnswer = now();
        pause = everyMs;
      } catch (err) {
        if (signal.aborted) return;
        pause = everyMs;
        if (!(err instanceof NotReachableError)) continue;
        const t = now();
        for (const [key, c] of calls) {
          if (t - Math.max(c.since, lastAnswer) < windowMs) continue;
          calls.delete(key);
          c.onSilent(err);
        }
        // Not answering: asked again soon, so a call that began during this version is told in time too.
        pause = Math.min(everyMs, WATCHDOG_RETRY_MS);
      }
    }
  };
  return {
    add(onSilent) {
      const key = Symbol('call');
      calls.set(key, { since: now(), onSilent });
      if (!stop) {
        const ac = new AbortController();
        stop = ac;
        void loop(ac.signal);
      }
      return () => {
        calls.delete(key);
        if (calls.size === 0 && stop) {
          stop.abort();
          stop = undefined;
        }
      };
    },
  };
}

// libvirt's messages (virerror.c) that say which kind of failure it was.
const NOT_FOUND = [/domain not found/i, /no domain with matching/i, /network not found/i, /no network with matching/i, /failed to get domain/i, /failed to get network/i];
const NOT_REACHABLE = [
  /failed to connect to the hypervisor/i,
  /failed to connect socket/i,
  /cannot recv data/i,
  /cannot write data/i,
  /end of file while reading data/i,
  /connection reset by peer/i,
  /broken pipe/i,
  /no connection driver available/i,
  /client socket is closed/i,
  /keepalive timeout/i,
  /is the daemon running/i,
];
const INTERRUPTED = [/operation aborted/i, /canceled by client/i, /cancelled by client/i];
const LIBVIRT_TIMEOUT = [/timed out during operation/i, /cannot acquire state change lock/i];

/** Turn a failed virsh run into the matching DomainError. */
export function classifyVirshFailure(
  r: RunResult,
  ctx: { uri: string; timeoutMs: number; onDeadline: 'not-reachable' | 'timed-out'; guest?: string; signal?: AbortSignal },
): DomainError {
  const cmd = r.argv.slice(1).join(' ');
  const guest = ctx.guest;
  if (r.spawnError) {
    return new NotReachableError(`cannot run ${r.argv[0]} (${r.spawnError.code ?? r.spawnError.message}): is libvirt-clients installed?`, { cause: r.spawnError, guest });
  }
  if (r.aborted) {
    return new InterruptedError(`${cmd}: interrupted`, { cause: ctx.signal?.reason, guest });
  }
  if (r.timedOut) {
    if (ctx.onDeadline === 'timed-out') {
      return new TimedOutError(`${cmd}: not done within ${formatMs(ctx.timeoutMs)} (virsh killed)`, { guest });
    }
    return new NotReachableError(`libvirt (${ctx.uri}) did not answer within ${formatMs(ctx.timeoutMs)}: ${cmd} killed`, { guest });
  }
  const message = virshMessage(r);
  const text = `${cmd}: ${message}`;
  if (r.killedBy) return new ProtocolError(`${cmd}: virsh died of ${r.killedBy}${message ? `: ${message}` : ''}`, { guest });
  if (r.exitCode !== 1) {
    // virsh exits 0 or 1; anything else is not virsh speaking.
    return new ProtocolError(`${describeRun(r)} (virsh exits 0 or 1)`, { guest });
  }
  if (NOT_REACHABLE.some((re) => re.test(message))) return new NotReachableError(text, { guest });
  if (NOT_FOUND.some((re) => re.test(message))) return new GuestNotFoundError(text, { guest });
  if (INTERRUPTED.some((re) => re.test(message))) return new InterruptedError(text, { guest });
  if (LIBVIRT_TIMEOUT.some((re) => re.test(message))) return new TimedOutError(text, { guest });
  return new OperationRefusedError(text || `${cmd}: failed without a message`, { guest });
}

/** virsh's own error lines (`error: ...`), joined; else the tail of its output. */
export function virshMessage(r: Pick<RunResult, 'stderr' | 'stdout'>): string {
  const lines = r.stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => l.startsWith('error:')).map((l) => l.slice('error:'.length).trim());
  const picked = errors.length > 0 ? errors : lines.length > 0 ? lines : r.stdout.trim().split('\n').slice(-3);
  return picked.filter(Boolean).join(' / ');
}

/** An argument as `-v` shows it: a listing's batch (kilobytes of commands) by its start and its size. */
function shortened(arg: string): string {
  if (arg.length <= 160) return arg;
  const commands = arg.split('; ').length;
  return `${arg.slice(0, 120)}… (${commands} commands, ${arg.length} bytes)`;
}
