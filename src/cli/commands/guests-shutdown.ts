// rc.libvirt guests_shutdown: ACPI-shut down every active guest concurrently,
// destroy at the timeout; the daemons stay up.
import type { CommandContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { withRun } from '../../rc/run-context.js';
import { stopGuests } from '../../rc/guest-steps.js';

/** Runs `rc.libvirt guests_shutdown`: exit 0 only when no guest was destroyed and nothing failed. */
export async function run(ctx: CommandContext): Promise<number> {
  return withRun(ctx, { root: !ctx.options.dryRun, programs: [], lock: !ctx.options.dryRun }, async (r) => {
    const outcome = await stopGuests(r, 'shutdown');
    return outcome.clean ? EXIT.ok : EXIT.failure;
  });
}
