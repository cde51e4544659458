// rc.libvirt soft_restart
import { runDaemonCommand } from '../../rc/daemon-commands.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt soft_restart`. */
export async function run(ctx: CommandContext): Promise<number> {
  return runDaemonCommand(ctx, 'soft_restart');
}
