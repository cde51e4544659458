// rc.libvirt plan: what stop would do to each guest and why, changing nothing.
import type { CommandContext } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { withRun } from '../../rc/run-context.js';
import { showPlan } from '../../rc/guest-steps.js';

/** Runs `rc.libvirt plan` (`--json` for scripts). */
export async function run(ctx: CommandContext): Promise<number> {
  return withRun(ctx, { root: false, programs: [], lock: false }, async (r) => {
    const plan = await showPlan(r, 'policy', r.json);
    return plan.unreachable.length > 0 ? EXIT.failure : EXIT.ok;
  });
}
