// The QMP side of the rescue path (libvirtd does not answer): the rescue
// driver (rescue-driver.ts) finds the guests in libvirt's status files and
// brings them down through their own monitors; these are its pieces. At the
// deadline `quit`, then SIGKILL of the recorded pid once it is checked to be
// that guest's QEMU. While libvirtd holds a monitor no second client gets a
// greeting, so guests/rescue.ts first ends the hung libvirtd by its checked pid.
import { deadline } from '../../util/deadline.js';
import { errorMessage } from '../../util/error-message.js';
import { processProgram } from '../../proc/identity.js';
import { stopProcess } from '../../proc/stop.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import type { StatusGuest } from './status-files.js';

/** `quit` the guest's QEMU; if it still runs after `quitWaitMs`, SIGKILL its pid (checked to be that QEMU). */
export async function quitOrKill(
  g: Pick<StatusGuest, 'pid' | 'uuid'>,
  client: QmpClient | undefined,
  quitWaitMs: number,
): Promise<{ result: 'quit' | 'killed' | 'failed'; reason: string }> {
  const r = await stopProcess(g.pid, {
    isOurs: () => isGuestQemu(g),
    // Without a monitor there is no asking: straight to the checked SIGKILL.
    ask: async () => {
      if (!client) return false;
      const d = deadline(quitWaitMs);
      try {
        await client.execute('quit', undefined, { signal: d.signal }).catch(() => undefined);
      } finally {
        d.clear();
      }
      return true;
    },
    graceMs: quitWaitMs,
    graceIncludesAsk: true,
    unaskedGraceMs: 0,
    killWaitMs: 0,
    pollMs: 50,
  });
  if (r.result === 'exited') return { result: 'quit', reason: 'QMP quit' };
  if (r.result === 'failed') return { result: 'failed', reason: `quit ignored, SIGKILL of ${g.pid} failed: ${errorMessage(r.error)}` };
  return { result: 'killed', reason: `${client ? 'quit ignored, ' : ''}SIGKILL of pid ${g.pid}` };
}

/** QEMU's run state (`running`, `paused`, `shutdown`...) from `query-status`. */
export async function queryStatus(client: QmpClient, signal: AbortSignal): Promise<string> {
  const r = await client.execute<{ status?: string }>('query-status', undefined, { signal });
  return String(r?.status ?? '');
}

/** True when the recorded pid is still this guest's QEMU (exe is qemu-system-*, cmdline names its UUID). */
export async function isGuestQemu(g: Pick<StatusGuest, 'pid' | 'uuid'>): Promise<boolean> {
  const info = await processProgram(g.pid);
  const args = info?.argv;
  if (!args) return false;
  const exe = info.exe ?? args[0]?.split('/').pop() ?? '';
  if (!/qemu/.test(exe)) return false;
  const i = args.indexOf('-uuid');
  return i >= 0 && args[i + 1]?.toLowerCase() === g.uuid.toLowerCase();
}
