// rc.libvirt guests_shutdown
import type { CommandContext } from '../context.js';
import { NotImplementedError } from '../errors.js';

/** Runs `rc.libvirt guests_shutdown`. */
export async function run(_ctx: CommandContext): Promise<number> {
  throw new NotImplementedError('guests_shutdown');
}
