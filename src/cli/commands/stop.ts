// rc.libvirt stop
import { runDaemonCommand } from '../../rc/daemon-commands.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt stop`. */
export async function run(ctx: CommandContext): Promise<number> {
  return runDaemonCommand(ctx, 'stop');
}
