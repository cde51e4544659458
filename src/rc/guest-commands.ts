// The commands that act on the guests alone (the daemons stay as they are):
// guests_shutdown, guests_reboot and plan, as bodies for withRun.
import { rebootGuests, showPlan, stopGuests } from './guest-steps.js';
import type { RunContext, RunOutcome } from './run-context.js';

/** `guests_shutdown`: `ok` only when no guest was destroyed and nothing failed. */
export async function guestsShutdown(run: RunContext): Promise<RunOutcome> {
  return (await stopGuests(run, 'shutdown')).clean ? 'ok' : 'failed';
}

/** `guests_reboot`: `ok` only when every guest runs again. */
export async function guestsReboot(run: RunContext): Promise<RunOutcome> {
  return (await rebootGuests(run)).clean ? 'ok' : 'failed';
}

/** `plan` (`--json` for scripts): `failed` when a connection could not be reached or a guest could not be described in time. */
export async function plan(run: RunContext): Promise<RunOutcome> {
  const p = await showPlan(run, 'policy', run.json);
  return p.unreachable.length > 0 || p.guests.some((g) => g.guest.undescribed) ? 'failed' : 'ok';
}
