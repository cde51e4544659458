// Starting, stopping and signalling one daemon, by the pid its pidfile names
// and only after checking that pid is that daemon.
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Log } from '../util/log.js';
import { deadline, formatMs, now, sleep } from '../util/deadline.js';
import { describeRun, runProcess } from '../util/run.js';
import { errorMessage } from '../util/error-message.js';
import type { DaemonSpec } from './daemon-spec.js';
import {
  clearBadPidfile,
  describeStrays,
  findStrayProcesses,
  inspectPidfile,
  isDaemonProgram,
} from './pidfile.js';
import { NODE_PROC_FS, processProgram, type ProcFs } from '../proc/identity.js';
import { stopProcess } from '../proc/stop.js';

/** Step of the watch for a daemon's pidfile after its start (one small file read). */
export const PIDFILE_POLL_MS = 20;

/** Step of the watch for a daemon's exit (one read of /proc/PID). */
export const EXIT_POLL_MS = 10;

/** How long a daemon must outlive writing its pidfile to count as started. */
export const SETTLE_MS = 200;

/** Options of startDaemon. */
export interface StartDaemonOptions {
  /** Override SETTLE_MS: 0 when the caller watches the daemon further (libvirtd: until it answers). */
  settleMs?: number;
}

/** What daemon operations run with. */
export interface DaemonOpContext {
  log: Log;
  signal: AbortSignal;
  fs?: ProcFs;
}

/** What happened to one daemon. */
export interface DaemonResult {
  name: string;
  /** `already-running`, `started`, `not-running`, `stopped`, `killed` (SIGKILL was needed), `reexecuted`, `failed` */
  action: 'already-running' | 'started' | 'not-running' | 'stopped' | 'killed' | 'reexecuted' | 'failed';
  pid?: number;
  /** Why it failed, in the daemon's own words where we have them. */
  error?: string;
}

/** The pid of the daemon when its pidfile names it running; clears (and reports) a bad pidfile otherwise. */
export async function runningPid(spec: DaemonSpec, ctx: DaemonOpContext): Promise<number | undefined> {
  const st = await inspectPidfile(spec, ctx.fs ?? NODE_PROC_FS);
  if (st.state === 'running') return st.pid;
  const said = await clearBadPidfile(spec, st, ctx.fs ?? NODE_PROC_FS);
  if (said) ctx.log.warn(said);
  return undefined;
}

/** Start a daemon unless it runs; resolves once its pidfile names a live process of it that outlived SETTLE_MS (or with the daemon's own error). */
export async function startDaemon(spec: DaemonSpec, ctx: DaemonOpContext, timeoutMs: number, opts: StartDaemonOptions = {}): Promise<DaemonResult> {
  const l = await launchDaemon(spec, ctx, timeoutMs, opts);
  return l.settled;
}

/** A daemon launched: `result` once its pidfile names it, `settled` once it also outlived the settling time. */
export interface LaunchedDaemon {
  result: DaemonResult;
  settled: Promise<DaemonResult>;
}

/**
 * Start a daemon unless it runs; resolves as soon as its pidfile names a live
 * process of it, so the next daemon can start while this one settles.
 */
export async function launchDaemon(spec: DaemonSpec, ctx: DaemonOpContext, timeoutMs: number, opts: StartDaemonOptions = {}): Promise<LaunchedDaemon> {
  const done = (result: DaemonResult): LaunchedDaemon => ({ result, settled: Promise.resolve(result) });
  const running = await runningPid(spec, ctx);
  if (running !== undefined) {
    ctx.log.info(`${spec.name} is already running (pid ${running})`);
    return done({ name: spec.name, action: 'already-running', pid: running });
  }
  const strays = await findStrayProcesses(spec, undefined, ctx.fs ?? NODE_PROC_FS);
  if (strays.length > 0) {
    return done({ name: spec.name, action: 'failed', error: `${describeStrays(spec, strays)}: not starting a second one; stop it, or point the -p option at its pidfile` });
  }
  await mkdir(dirname(spec.pidfile), { recursive: true, mode: 0o755 });
  const logFile = `/var/log/libvirt/${spec.name}.log`;
  const logStart = await fileSize(logFile);
  ctx.log.info(`starting ${spec.name}: ${spec.startArgv.join(' ')}`);
  const started = now();
  // With -d the program forks the daemon and exits once it is set up (non-zero when that failed).
  const r = await runProcess(spec.startArgv, { timeoutMs, signal: ctx.signal, env: { ...process.env, LC_ALL: 'C' } });
  const ownWords = async (): Promise<string> => {
    const tail = await newLogLines(logFile, logStart);
    return tail ? `; ${logFile} says: ${tail}` : '';
  };
  if (r.exitCode !== 0) {
    const said = daemonWords(r.stderr) || daemonWords(r.stdout);
    const how = said ? `${spec.startArgv.join(' ')}: exit ${r.exitCode ?? r.killedBy}: ${said}` : describeRun(r);
    return done({ name: spec.name, action: 'failed', error: `${spec.name} did not start: ${how}${said ? '' : await ownWords()}` });
  }
  const dl = deadline(Math.max(1000, timeoutMs - (now() - started)), ctx.signal);
  try {
    for (;;) {
      const st = await inspectPidfile(spec, ctx.fs ?? NODE_PROC_FS);
      if (st.state === 'running') {
        const pid = st.pid;
        const result: DaemonResult = { name: spec.name, action: 'started', pid };
        // A daemon that dies right after writing its pidfile (a bad socket, a config it rejects late) did not start.
        const settle = async (): Promise<DaemonResult> => {
          const settleMs = opts.settleMs ?? SETTLE_MS;
          if (settleMs > 0) await sleep(settleMs);
          if (!(await isAlive(spec, pid, ctx.fs ?? NODE_PROC_FS))) {
            return { name: spec.name, action: 'failed', pid, error: `${spec.name} (pid ${pid}) exited right after starting${await ownWords()}` };
          }
          ctx.log.notice(`${spec.name} started (pid ${pid})`);
          return result;
        };
        // Never a rejection (it may wait unobserved while the next daemons start).
        const settled = settle().catch((err: unknown): DaemonResult => ({ name: spec.name, action: 'failed', pid, error: `${spec.name} (pid ${pid}): cannot check it after starting: ${errorMessage(err)}` }));
        return { result, settled };
      }
      await sleep(PIDFILE_POLL_MS, dl.signal).catch(() => undefined);
      if (dl.signal.aborted) {
        const why = ctx.signal.aborted ? 'interrupted' : `${spec.pidfile} names no running ${spec.name} after ${formatMs(now() - started)}`;
        return done({ name: spec.name, action: 'failed', error: `${spec.name} did not start: ${why}${await ownWords()}` });
      }
    }
  } finally {
    dl.clear();
  }
}

/** Whether `pid` is still a live process of the daemon. */
export async function isAlive(spec: DaemonSpec, pid: number, fs: ProcFs = NODE_PROC_FS): Promise<boolean> {
  const who = await processProgram(pid, fs);
  return who !== undefined && isDaemonProgram(who, spec);
}

/** Options of stopDaemon. */
export interface StopDaemonOptions {
  /** How long to wait after SIGTERM before SIGKILL. */
  timeoutMs: number;
  /** Send SIGKILL at once (a rescue: the daemon hangs). */
  force?: boolean;
}

/** Stop a daemon: SIGTERM, wait for it to exit, SIGKILL (with a warning) only after the deadline. Not running is fine. */
export async function stopDaemon(spec: DaemonSpec, ctx: DaemonOpContext, opts: StopDaemonOptions): Promise<DaemonResult> {
  const fs = ctx.fs ?? NODE_PROC_FS;
  const pid = await runningPid(spec, ctx);
  if (pid === undefined) {
    const strays = await findStrayProcesses(spec, undefined, fs);
    if (strays.length > 0) ctx.log.warn(`${describeStrays(spec, strays)}: left alone`);
    else ctx.log.info(`${spec.name} is not running`);
    return { name: spec.name, action: 'not-running' };
  }
  if (opts.force) ctx.log.warn(`killing ${spec.name} (pid ${pid}) with SIGKILL`);
  else ctx.log.info(`stopping ${spec.name} (pid ${pid})`);
  // The deadline is not cut short by an interrupt: a daemon half stopped is worse than one waited for.
  const r = await stopProcess(pid, {
    isOurs: () => isAlive(spec, pid, fs),
    ask: opts.force ? null : undefined,
    graceMs: opts.timeoutMs,
    killWaitMs: 10_000,
    pollMs: EXIT_POLL_MS,
    onKill: () => {
      if (!opts.force) ctx.log.warn(`${spec.name} (pid ${pid}) did not exit within ${formatMs(opts.timeoutMs)} of SIGTERM: sending SIGKILL`);
    },
  });
  if (r.result === 'exited' || r.result === 'killed') {
    const action = r.result === 'exited' && !opts.force ? 'stopped' : 'killed';
    ctx.log.notice(`${spec.name} ${action} (pid ${pid})`);
    await removeIfStale(spec, ctx);
    return { name: spec.name, action, pid };
  }
  return { name: spec.name, action: 'failed', pid, error: `${spec.name} (pid ${pid}) still runs after SIGKILL` };
}

/** Send SIGUSR1 (re-exec keeping state, virtlogd(8)/virtlockd(8)) and check the same pid still runs that daemon. */
export async function reexecDaemon(spec: DaemonSpec, ctx: DaemonOpContext): Promise<DaemonResult> {
  const fs = ctx.fs ?? NODE_PROC_FS;
  const pid = await runningPid(spec, ctx);
  if (pid === undefined) return { name: spec.name, action: 'not-running' };
  ctx.log.info(`re-executing ${spec.name} (pid ${pid}) with SIGUSR1`);
  sendSignal(pid, 'SIGUSR1');
  // Give the re-exec time to run, then check the pid again (a failed re-exec ends the process).
  for (let i = 0; i < 10; i++) {
    await sleep(200);
    if (!(await isAlive(spec, pid, fs))) {
      return { name: spec.name, action: 'failed', pid, error: `${spec.name} (pid ${pid}) ended after SIGUSR1 instead of re-executing` };
    }
  }
  const st = await inspectPidfile(spec, fs);
  if (st.state === 'running' && st.pid !== pid) {
    return { name: spec.name, action: 'failed', pid: st.pid, error: `${spec.name} changed pid from ${pid} to ${st.pid} on SIGUSR1` };
  }
  ctx.log.notice(`${spec.name} re-executed (pid ${pid} kept)`);
  return { name: spec.name, action: 'reexecuted', pid };
}

function sendSignal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone meanwhile */
  }
}

async function removeIfStale(spec: DaemonSpec, ctx: DaemonOpContext): Promise<void> {
  const fs = ctx.fs ?? NODE_PROC_FS;
  const st = await inspectPidfile(spec, fs);
  if (st.state === 'stale' || st.state === 'invalid') await fs.unlink(spec.pidfile).catch(() => undefined);
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

// The lines a daemon added to its log since `from` (the last few, errors first), for failure messages.
async function newLogLines(path: string, from: number): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return '';
  }
  return daemonWords(text.slice(from));
}

/** The gist of a libvirt daemon's messages: its error lines (else its last lines), without the timestamp and thread prefix. */
export function daemonWords(text: string): string {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const errors = lines.filter((l) => /: error : /.test(l));
  return (errors.length > 0 ? errors : lines)
    .slice(-3)
    .map((l) => l.replace(/^\d{4}-\d\d-\d\d [\d:.]+[+-]\d{4}: \d+: (\w+ : )?/, ''))
    .join(' / ');
}
