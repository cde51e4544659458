// rc.libvirt start
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt start`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('start');
}
