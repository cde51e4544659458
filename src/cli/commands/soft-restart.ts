// rc.libvirt soft_restart
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt soft_restart`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('soft_restart');
}
