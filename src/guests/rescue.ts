// When libvirtd does not answer at stop: end the hung daemon (by its checked
// pid) so that its guests' QMP monitors are free, and hand the ladder a rescue
// driver over libvirt's status files and QMP (shutdown by the power button,
// destroy at the deadline). Only the local system URI can be rescued.
import type { Settings } from '../config/settings.js';
import type { DomainDriver } from '../domain/types.js';
import { errorMessage } from '../domain/errors.js';
import { createLibvirtRescueDriver } from '../domain/libvirt/rescue-driver.js';
import { describeDaemon } from '../daemons/daemon-spec.js';
import { stopDaemon } from '../daemons/daemon-process.js';
import type { Log } from '../report/log.js';
import type { Unreachable } from './plan.js';

/** The URIs whose guests live under this host's libvirtd status files. */
export const RESCUABLE_URIS: readonly string[] = ['qemu:///system', 'qemu://localhost/system'];

/** Injection points: how the hung daemon is ended, and how the rescue driver is made. */
export interface RescueDeps {
  releaseMonitors?: (settings: Settings, log: Log, signal: AbortSignal) => Promise<void>;
  createRescueDriver?: (uri: string, log: Log) => DomainDriver;
}

/** End the hung libvirtd with SIGKILL (a stopped or hung process cannot act on SIGTERM), by its checked pid. */
export async function killHungLibvirtd(settings: Settings, log: Log, signal: AbortSignal): Promise<void> {
  const r = await stopDaemon(describeDaemon(settings, 'libvirtd'), { log, signal }, { timeoutMs: 0, force: true });
  if (r.action === 'failed') throw new Error(r.error ?? 'libvirtd could not be ended');
}

/** Rescue drivers for the unreachable libvirt connections that can be rescued; the others are named in `lost`. */
export async function rescueDrivers(
  unreachable: readonly Unreachable[],
  settings: Settings,
  log: Log,
  signal: AbortSignal,
  deps: RescueDeps = {},
): Promise<{ drivers: DomainDriver[]; lost: Unreachable[] }> {
  if (settings.driver !== 'libvirt') return { drivers: [], lost: [...unreachable] };
  // Only a daemon that does not answer a ping is ended; a slow listing is reported, never a reason to kill libvirtd.
  const rescuable = unreachable.filter((u) => u.hung && RESCUABLE_URIS.includes(u.uri));
  const lost = unreachable.filter((u) => !rescuable.includes(u));
  if (rescuable.length === 0) return { drivers: [], lost };
  log.error(`libvirtd does not answer (${rescuable.map((u) => u.error).join('; ')}): rescue path — ending it and bringing its guests down through their QMP monitors`);
  try {
    await (deps.releaseMonitors ?? killHungLibvirtd)(settings, log, signal);
  } catch (err) {
    log.error(`rescue: could not end the hung libvirtd: ${errorMessage(err)}; trying the monitors anyway`);
  }
  const make = deps.createRescueDriver ?? ((uri: string, l: Log) => createLibvirtRescueDriver({ uri, log: l }));
  // One libvirtd, one set of status files: one rescue driver even when both spellings of the URI are configured.
  return { drivers: [make(rescuable[0]!.uri, log)], lost };
}
