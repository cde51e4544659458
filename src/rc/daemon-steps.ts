// The daemon side of start, stop and soft_restart: virtlockd → virtlogd →
// libvirtd up (waiting until libvirtd answers), the reverse down, and the
// re-exec of virtlogd/virtlockd that keeps running guests' locks and logs.
import type { Settings } from '../config/settings.js';
import { describeDaemons, type DaemonSpec } from '../daemons/daemon-spec.js';
import {
  isAlive,
  launchDaemon,
  reexecDaemon,
  runningPid,
  startDaemon,
  stopDaemon,
  type DaemonOpContext,
  type DaemonResult,
} from '../daemons/daemon-process.js';
import { loadModules, modulesToLoad, unloadModules } from '../daemons/modules.js';
import { describePidfileProblem, inspectPidfile } from '../daemons/pidfile.js';
import { waitUntilAnswering } from '../daemons/readiness.js';
import { checkQemuConfOwner, makeRuntimeDirs } from '../daemons/runtime-dirs.js';
import type { Log } from '../util/log.js';
import { formatMs, now } from '../util/deadline.js';
import { errorMessage } from '../util/error-message.js';
import { destroyActiveNetworks, type NetworkListing } from './networks.js';

/** What a daemon step needs (a RunContext is one). */
export interface DaemonStepContext {
  settings: Settings;
  log: Log;
  signal: AbortSignal;
  dryRun: boolean;
}

/** Whether every daemon result is a success. */
export function allOk(results: readonly DaemonResult[]): boolean {
  return results.every((r) => r.action !== 'failed');
}

function opContext(ctx: DaemonStepContext): DaemonOpContext {
  return { log: ctx.log, signal: ctx.signal };
}

function timeoutMs(ctx: DaemonStepContext): number {
  return ctx.settings.daemonTimeout * 1000;
}

/** Daemons started: as they are once libvirtd answers, and once virtlockd and virtlogd have also settled (SETTLE_MS). */
export interface LaunchedDaemons {
  /** libvirtd answers (or failed); virtlockd and virtlogd run (their pidfiles name them) or failed. */
  up: DaemonResult[];
  /** Every result once virtlockd and virtlogd outlived their first SETTLE_MS too (errors logged); never rejects. */
  settled: Promise<DaemonResult[]>;
}

/**
 * Start what does not run (virtlockd, virtlogd, libvirtd), load modules, and
 * return once libvirtd answers (or with its failure); whether virtlockd and
 * virtlogd outlive their first SETTLE_MS is `settled`.
 */
export async function launchDaemons(ctx: DaemonStepContext): Promise<LaunchedDaemons> {
  const specs = describeDaemons(ctx.settings);
  if (ctx.dryRun) {
    const results = await dryRun(ctx, specs, 'start');
    return { up: results, settled: Promise.resolve(results) };
  }
  // The modules load while the runtime directories are made and virtlockd and virtlogd start (libvirtd
  // starts only once they are loaded); qemu.conf is read meanwhile. Neither ever rejects.
  const modules = modulesToLoad(ctx.settings.modules, ctx.log)
    .then((m) => loadModules(m, { log: ctx.log, signal: ctx.signal }))
    .catch((err: unknown) => ctx.log.warn(`could not load the modules: ${errorMessage(err)}`));
  const confChecked = checkQemuConfOwner(ctx.settings, ctx.log).catch((err: unknown) => ctx.log.warn(`cannot read qemu.conf: ${errorMessage(err)}`));
  try {
    await makeRuntimeDirs(ctx.settings, ctx.log);
    // virtlockd and virtlogd together (neither needs the other), libvirtd once
    // both pidfiles name them (the guests it autostarts need them); whether
    // virtlockd and virtlogd outlive their first SETTLE_MS is checked while
    // libvirtd starts.
    const notStarted = (spec: DaemonSpec): { result: DaemonResult; settled: Promise<DaemonResult> } => {
      const r: DaemonResult = { name: spec.name, action: 'failed', error: `${spec.name} not started: interrupted` };
      return { result: r, settled: Promise.resolve(r) };
    };
    const helpers = specs.filter((spec) => spec.name !== 'libvirtd');
    const libvirtd = specs.find((spec) => spec.name === 'libvirtd') as DaemonSpec;
    const launched = await Promise.all(helpers.map((spec) =>
      ctx.signal.aborted ? notStarted(spec) : launchDaemon(spec, opContext(ctx), timeoutMs(ctx))));
    let last: DaemonResult;
    if (ctx.signal.aborted) last = notStarted(libvirtd).result;
    else {
      // The original loads the modules right before libvirtd.
      await modules;
      last = await startLibvirtd(libvirtd, ctx);
    }
    const up = [...launched.map((l) => l.result), last];
    const results = [...launched.map((l) => l.settled), Promise.resolve(last)];
    const settled = Promise.all(results).then((all) => {
      for (const r of all) if (r.error) ctx.log.error(r.error);
      return all;
    });
    return { up, settled };
  } finally {
    await Promise.all([modules, confChecked]);
  }
}

// libvirtd: started (or found running), then waited for until it answers `virsh version`.
async function startLibvirtd(spec: DaemonSpec, ctx: DaemonStepContext): Promise<DaemonResult> {
  const started = now();
  // No settling pause: the wait for its answer below asks between tries whether it still runs.
  const r = await startDaemon(spec, opContext(ctx), timeoutMs(ctx), { settleMs: 0 });
  if (r.action === 'failed' || r.pid === undefined) return r;
  const pid = r.pid;
  const remaining = Math.max(1000, timeoutMs(ctx) - (now() - started));
  const answer = await waitUntilAnswering(ctx.settings, ctx.signal, remaining, () => isAlive(spec, pid));
  if (answer.ok) {
    ctx.log.notice(`libvirtd answers (pid ${pid}, after ${formatMs(now() - started)})`);
    return r;
  }
  const why = answer.died ? `libvirtd (pid ${pid}) exited while starting` : `libvirtd (pid ${pid}) does not answer after ${formatMs(now() - started)}`;
  return { name: spec.name, action: 'failed', pid, error: `${why}: ${answer.reason}; see /var/log/libvirt/libvirtd.log` };
}

/**
 * Stop networks (those `networks` listed, when `stop` listed them while its
 * guests were being saved), then libvirtd, then virtlogd and virtlockd
 * together (neither needs the other; both outlive every guest and libvirtd),
 * then unload unused modules. Daemons that do not run are fine.
 */
export async function stopDaemons(ctx: DaemonStepContext, networks?: Promise<NetworkListing[]>): Promise<DaemonResult[]> {
  const specs = describeDaemons(ctx.settings).reverse();
  if (ctx.dryRun) return dryRun(ctx, specs, 'stop');
  const [libvirtd, ...helpers] = specs as [DaemonSpec, ...DaemonSpec[]];
  if ((await runningPid(libvirtd, opContext(ctx))) !== undefined) {
    await destroyActiveNetworks(ctx.settings, ctx.log, ctx.signal, networks);
  }
  const stop = (spec: DaemonSpec): Promise<DaemonResult> => stopDaemon(spec, opContext(ctx), { timeoutMs: timeoutMs(ctx) });
  const results = [await stop(libvirtd), ...(await Promise.all(helpers.map(stop)))];
  await unloadModules(await modulesToLoad(ctx.settings.modules, quiet(ctx.log)), { log: ctx.log, signal: ctx.signal });
  for (const r of results) if (r.error) ctx.log.error(r.error);
  return results;
}

/** Restart libvirtd while guests run; virtlogd and virtlockd re-exec (SIGUSR1), or start when they were down. */
export async function softRestartDaemons(ctx: DaemonStepContext): Promise<DaemonResult[]> {
  const specs = describeDaemons(ctx.settings);
  if (ctx.dryRun) return dryRun(ctx, specs, 'soft_restart');
  const results: DaemonResult[] = [];
  for (const spec of specs) {
    if (spec.name === 'libvirtd') continue;
    const r = await reexecDaemon(spec, opContext(ctx));
    if (r.action === 'failed' && r.pid !== undefined && !(await isAlive(spec, r.pid))) {
      // It ended instead of re-executing: report that, and bring it back so guests get their locks and logs again.
      results.push(r);
      const again = await startDaemon(spec, opContext(ctx), timeoutMs(ctx));
      if (again.action === 'failed') results.push(again);
      continue;
    }
    results.push(r.action === 'not-running' ? await startDaemon(spec, opContext(ctx), timeoutMs(ctx)) : r);
  }
  const libvirtd = specs[2] as DaemonSpec;
  const stopped = await stopDaemon(libvirtd, opContext(ctx), { timeoutMs: timeoutMs(ctx) });
  if (stopped.action === 'failed') results.push(stopped);
  else {
    await makeRuntimeDirs(ctx.settings, ctx.log);
    results.push(await startLibvirtd(libvirtd, ctx));
  }
  for (const r of results) if (r.error) ctx.log.error(r.error);
  return results;
}

// --dry-run: say what would happen to each daemon, change nothing.
async function dryRun(ctx: DaemonStepContext, specs: DaemonSpec[], what: 'start' | 'stop' | 'soft_restart'): Promise<DaemonResult[]> {
  const results: DaemonResult[] = [];
  for (const spec of specs) {
    const st = await inspectPidfile(spec);
    const problem = describePidfileProblem(spec, st);
    if (problem) ctx.log.info(`${problem} (would be removed)`);
    const pid = st.state === 'running' ? st.pid : undefined;
    let says: string;
    if (pid !== undefined) {
      const act = what === 'start' ? 'runs, would be left alone' : what === 'stop' ? 'would be stopped (SIGTERM)' : spec.name === 'libvirtd' ? 'would be restarted' : 'would be re-executed (SIGUSR1)';
      says = `${spec.name} (pid ${pid}) ${act}`;
    } else {
      says = what === 'stop' ? `${spec.name} does not run: nothing to do` : `${spec.name} would be started: ${spec.startArgv.join(' ')}`;
    }
    ctx.log.info(`dry run: ${says}`);
    results.push(pid !== undefined ? { name: spec.name, action: what === 'stop' ? 'stopped' : 'already-running', pid } : { name: spec.name, action: 'not-running' });
  }
  return results;
}

// The module notice about KVM is said once, at start; at stop it is only a debug line.
function quiet(log: Log): Log {
  return { ...log, notice: (m) => log.debug(m) };
}
