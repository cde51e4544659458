// The QMP side of the rescue path (libvirtd does not answer): the rescue
// driver (rescue-driver.ts) finds the guests in libvirt's status files and
// brings them down through their own monitors; these are its pieces. At the
// deadline `quit`, then SIGKILL of the recorded pid once it is checked to be
// that guest's QEMU. While libvirtd holds a monitor no second client gets a
// greeting, so guests/rescue.ts first ends the hung libvirtd by its checked pid.
import { readFileSync, readlinkSync } from 'node:fs';
import { deadline, sleep } from '../../util/deadline.js';
import { errorMessage } from '../../util/error-message.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import type { StatusGuest } from './status-files.js';

/** `quit` the guest's QEMU; if it still runs after `quitWaitMs`, SIGKILL its pid (checked to be that QEMU). */
export async function quitOrKill(
  g: Pick<StatusGuest, 'pid' | 'uuid'>,
  client: QmpClient | undefined,
  quitWaitMs: number,
): Promise<{ result: 'quit' | 'killed' | 'failed'; reason: string }> {
  const d = deadline(quitWaitMs);
  try {
    if (client) await client.execute('quit', undefined, { signal: d.signal }).catch(() => undefined);
    while (client && !d.signal.aborted && isGuestQemu(g)) await sleep(50, d.signal).catch(() => undefined);
  } finally {
    d.clear();
  }
  if (!isGuestQemu(g)) return { result: 'quit', reason: 'QMP quit' };
  try {
    process.kill(g.pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return { result: 'failed', reason: `quit ignored, SIGKILL of ${g.pid} failed: ${errorMessage(err)}` };
  }
  return { result: 'killed', reason: `${client ? 'quit ignored, ' : ''}SIGKILL of pid ${g.pid}` };
}

/** QEMU's run state (`running`, `paused`, `shutdown`...) from `query-status`. */
export async function queryStatus(client: QmpClient, signal: AbortSignal): Promise<string> {
  const r = await client.execute<{ status?: string }>('query-status', undefined, { signal });
  return String(r?.status ?? '');
}

/** True when the recorded pid is still this guest's QEMU (exe is qemu-system-*, cmdline names its UUID). */
export function isGuestQemu(g: Pick<StatusGuest, 'pid' | 'uuid'>): boolean {
  try {
    const stat = readFileSync(`/proc/${g.pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const args = readFileSync(`/proc/${g.pid}/cmdline`, 'latin1').split('\0');
    const exe = safeReadlink(`/proc/${g.pid}/exe`) ?? args[0] ?? '';
    if (!/qemu/.test(exe.split('/').pop() ?? '')) return false;
    const i = args.indexOf('-uuid');
    return i >= 0 && args[i + 1]?.toLowerCase() === g.uuid.toLowerCase();
  } catch {
    return false;
  }
}

function safeReadlink(p: string): string | undefined {
  try {
    return readlinkSync(p).replace(/ \(deleted\)$/, '');
  } catch {
    return undefined;
  }
}
