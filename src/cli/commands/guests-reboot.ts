// rc.libvirt guests_reboot: reboot every running guest concurrently and wait
// until each runs again (or its timeout).
import type { CommandContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { withRun } from '../../rc/run-context.js';
import { rebootGuests } from '../../rc/guest-steps.js';

/** Runs `rc.libvirt guests_reboot`: exit 0 only when every guest runs again. */
export async function run(ctx: CommandContext): Promise<number> {
  return withRun(ctx, { root: !ctx.options.dryRun, programs: [], lock: !ctx.options.dryRun }, async (r) => {
    const outcome = await rebootGuests(r);
    return outcome.clean ? EXIT.ok : EXIT.failure;
  });
}
