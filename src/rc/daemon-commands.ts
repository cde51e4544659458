// start, stop, restart, soft_restart and shutdown as sequences of daemon and
// guest steps, with their summary and outcome. The command table
// (cli/commands.ts) runs these; tests run them with other guest steps injected.
import type { DaemonResult } from '../daemons/daemon-process.js';
import * as realGuestSteps from './guest-steps.js';
import type { GuestStepOutcome } from './guest-steps.js';
import { allOk, launchDaemons, softRestartDaemons, stopDaemons } from './daemon-steps.js';
import { listActiveNetworks, type NetworkListing } from './networks.js';
import type { RunContext, RunOutcome } from './run-context.js';

/** The guest side's steps (src/rc/guest-steps.ts), injectable. */
export interface GuestSteps {
  stopGuests: typeof realGuestSteps.stopGuests;
  startGuests: typeof realGuestSteps.startGuests;
}

/** A daemon command: start | stop | restart | soft_restart | shutdown. */
export type DaemonCommand = 'start' | 'stop' | 'restart' | 'soft_restart' | 'shutdown';

/** Run a daemon command's body (inside withRun): `ok` when every step went cleanly, else `failed`. */
export async function daemonCommand(run: RunContext, which: DaemonCommand, steps: GuestSteps = realGuestSteps): Promise<RunOutcome> {
  const manageDaemons = run.settings.driver === 'libvirt';
  let ok = true;
  const fold = (results: DaemonResult[]): void => {
    if (!allOk(results)) ok = false;
  };
  const doStop = async (mode: 'policy' | 'shutdown'): Promise<void> => {
    // The networks to stop after the guests are listed while the guests are handled (never rejects).
    let networks: Promise<NetworkListing[]> | undefined;
    const acting = manageDaemons && !run.dryRun ? () => void (networks ??= listActiveNetworks(run.settings, run.log, run.signal)) : undefined;
    if (!(await guestStep(run, 'stop', () => steps.stopGuests(run, mode, acting ? { acting } : {})))) ok = false;
    if (run.signal.aborted) return interrupted(run);
    if (manageDaemons) fold(await stopDaemons(run, networks));
  };
  const doStart = async (): Promise<void> => {
    // The guests are listed as soon as libvirtd answers; none is started before virtlockd and virtlogd have settled too.
    let settled: Promise<DaemonResult[]> | undefined;
    if (manageDaemons) {
      const launched = await launchDaemons(run);
      if (!allOk(launched.up)) {
        fold(await launched.settled);
        run.log.error('guests are not started: libvirtd is not up');
        return;
      }
      settled = launched.settled;
    }
    const daemonsReady = settled?.then((all) => (allOk(all) ? undefined : `${all.filter((r) => r.action === 'failed').map((r) => r.name).join(', ')} did not come up`));
    try {
      if (run.signal.aborted) return interrupted(run);
      if (!(await guestStep(run, 'start', () => steps.startGuests(run, daemonsReady ? { daemonsReady } : {})))) ok = false;
    } finally {
      if (settled) fold(await settled);
    }
  };
  switch (which) {
    case 'start':
      await doStart();
      break;
    case 'stop':
      await doStop('policy');
      break;
    case 'shutdown':
      await doStop('shutdown');
      break;
    case 'restart':
      await doStop('policy');
      if (!run.signal.aborted) await doStart();
      break;
    case 'soft_restart':
      if (manageDaemons) fold(await softRestartDaemons(run));
      else run.log.info('DRIVER=qmp: no libvirt daemons to restart');
      break;
  }
  if (run.signal.aborted) ok = false;
  const verb = which.replace('_', ' ');
  if (ok) run.log.notice(`${verb}: done${run.dryRun ? ' (dry run: nothing was changed)' : ''}`);
  else run.log.error(`${verb}: finished with failures (see above)`);
  return ok ? 'ok' : 'failed';
}

// A guest step whose failures are reported, never thrown: the daemon side goes on. True when clean.
async function guestStep(run: RunContext, what: string, step: () => Promise<GuestStepOutcome>): Promise<boolean> {
  try {
    const outcome = await step();
    if (outcome.destroyed.length > 0) run.log.error(`guests destroyed: ${outcome.destroyed.join(', ')}`);
    if (outcome.failed.length > 0) run.log.error(`guests failed: ${outcome.failed.join(', ')}`);
    return outcome.clean;
  } catch (err) {
    run.log.error(`guests (${what}): ${(err as Error).message}`);
    return false;
  }
}

function interrupted(run: RunContext): void {
  run.log.warn('interrupted: no further steps start');
}
