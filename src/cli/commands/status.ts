// rc.libvirt status
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt status`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('status');
}
