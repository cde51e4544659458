// rc.libvirt shutdown
import { runDaemonCommand } from '../../rc/daemon-commands.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt shutdown`. */
export async function run(ctx: CommandContext): Promise<number> {
  return runDaemonCommand(ctx, 'shutdown');
}
