// rc.libvirt shutdown
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt shutdown`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('shutdown');
}
