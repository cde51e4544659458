// rc.libvirt start
import { runDaemonCommand } from '../../rc/daemon-commands.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt start`. */
export async function run(ctx: CommandContext): Promise<number> {
  return runDaemonCommand(ctx, 'start');
}
