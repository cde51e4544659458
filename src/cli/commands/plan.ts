// rc.libvirt plan
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt plan`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('plan');
}
