// rc.libvirt restart
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt restart`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('restart');
}
