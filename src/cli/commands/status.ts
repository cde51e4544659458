// rc.libvirt status: needs no root and takes no lock (it only reads, and must
// answer while a stop runs); as another user libvirtd may refuse to answer it.
import { collectStatus, formatStatus, statusExitCode } from '../../rc/status.js';
import { isRoot, withRun } from '../../rc/run-context.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt status`. */
export async function run(ctx: CommandContext): Promise<number> {
  return withRun(ctx, { root: false, programs: [], lock: false }, async (run) => {
    const status = await collectStatus(run.settings, run.signal, isRoot());
    run.stdout.write(run.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
    return statusExitCode(status);
  });
}
