// rc.libvirt restart
import { runDaemonCommand } from '../../rc/daemon-commands.js';
import type { CommandContext } from '../context.js';

/** Runs `rc.libvirt restart`. */
export async function run(ctx: CommandContext): Promise<number> {
  return runDaemonCommand(ctx, 'restart');
}
