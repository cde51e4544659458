// rc.libvirt stop
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt stop`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('stop');
}
