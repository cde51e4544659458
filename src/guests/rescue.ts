// When libvirtd does not answer at stop: end the hung daemon (by its checked
// pid) so that its guests' QMP monitors are free, and hand the ladder a rescue
// driver over libvirt's status files and QMP (shutdown by the power button,
// destroy at the deadline). Only the local system URI can be rescued. When
// libvirtd does not run at all, only guests whose QEMU still runs need it.
import type { Settings } from '../config/settings.js';
import type { DomainDriver } from '../domain/types.js';
import { errorMessage } from '../util/error-message.js';
import { createLibvirtRescueDriver } from '../domain/libvirt/rescue-driver.js';
import { isGuestQemu, queryStatus } from '../domain/libvirt/rescue.js';
import { withQmp } from '../qmp/qmp-client.js';
import { deadline } from '../util/deadline.js';
import { DEFAULT_STATUS_DIR, readStatusFiles } from '../domain/libvirt/status-files.js';
import { describeDaemon } from '../daemons/daemon-spec.js';
import { stopDaemon } from '../daemons/daemon-process.js';
import { inspectPidfile } from '../daemons/pidfile.js';
import type { Log } from '../util/log.js';
import type { Unreachable } from './plan.js';

/** The URIs whose guests live under this host's libvirtd status files. */
export const RESCUABLE_URIS: readonly string[] = ['qemu:///system', 'qemu://localhost/system'];

/** Whether libvirtd runs (its pidfile names a live libvirtd), and the names of its guests whose QEMU still runs. */
export interface LibvirtdPresence {
  running: boolean;
  liveGuests: string[];
}

/** Injection points: how libvirtd and its guests are found, how the hung daemon is ended, and how the rescue driver is made. */
export interface RescueDeps {
  probeLibvirtd?: (settings: Settings, signal: AbortSignal) => Promise<LibvirtdPresence>;
  releaseMonitors?: (settings: Settings, log: Log, signal: AbortSignal) => Promise<void>;
  createRescueDriver?: (uri: string, log: Log) => DomainDriver;
}

/** libvirtd by its pidfile checks, its guests by the status files whose QEMU still lives (never changes anything). */
export async function probeLibvirtd(settings: Settings, signal: AbortSignal): Promise<LibvirtdPresence> {
  const st = await inspectPidfile(describeDaemon(settings, 'libvirtd'));
  const running = st.state === 'running';
  const { guests } = await readStatusFiles(DEFAULT_STATUS_DIR);
  const live = await Promise.all(guests.map((g) => isGuestQemu(g)));
  const alive = guests.filter((_, i) => live[i]);
  if (running) return { running, liveGuests: alive.map((g) => g.name) };
  // Without libvirtd a guest that powered off leaves its QEMU in `shutdown` (libvirt runs it with -no-shutdown)
  // until libvirtd comes back to reap it: that guest does not run. Its monitor is free, so ask it.
  const up = await Promise.all(alive.map((g) => guestStillUp(g.monitorPath, g.name, signal)));
  return { running, liveGuests: alive.filter((_, i) => up[i]).map((g) => g.name) };
}

const PROBE_MS = 3000;

// False only when QEMU says the guest has shut down; any doubt (no answer) counts as up.
async function guestStillUp(monitorPath: string, guest: string, signal: AbortSignal): Promise<boolean> {
  const d = deadline(PROBE_MS, signal);
  try {
    return (await withQmp(monitorPath, { signal: d.signal, guest }, (c) => queryStatus(c, d.signal))) !== 'shutdown';
  } catch {
    return true;
  } finally {
    d.clear();
  }
}

/** End the hung libvirtd with SIGKILL (a stopped or hung process cannot act on SIGTERM), by its checked pid. */
export async function killHungLibvirtd(settings: Settings, log: Log, signal: AbortSignal): Promise<void> {
  const r = await stopDaemon(describeDaemon(settings, 'libvirtd'), { log, signal }, { timeoutMs: 0, force: true });
  if (r.action === 'failed') throw new Error(r.error ?? 'libvirtd could not be ended');
}

/** What the rescue path would do with the unreachable connections: nothing (`none`: libvirtd not running, no guest of it left), rescue them, or nothing possible; `lost` are the connections it cannot help. */
export async function assessRescue(
  unreachable: readonly Unreachable[],
  settings: Settings,
  signal: AbortSignal,
  deps: Pick<RescueDeps, 'probeLibvirtd'> = {},
): Promise<{ kind: 'none' | 'rescue' | 'impossible'; rescuable: Unreachable[]; lost: Unreachable[]; presence?: LibvirtdPresence }> {
  if (settings.driver !== 'libvirt') return { kind: 'impossible', rescuable: [], lost: [...unreachable] };
  // Only a daemon that answered nothing within the plan's window (HUNG_WINDOW_MS), or refused the connection, is ended; a slow listing is reported, never a reason to kill libvirtd.
  const rescuable = unreachable.filter((u) => u.hung && RESCUABLE_URIS.includes(u.uri));
  const lost = unreachable.filter((u) => !rescuable.includes(u));
  if (rescuable.length === 0) return { kind: 'impossible', rescuable, lost };
  const presence = await (deps.probeLibvirtd ?? probeLibvirtd)(settings, signal);
  // Stopped already (stop run twice, or never started): nothing to rescue, nothing failed.
  return { kind: !presence.running && presence.liveGuests.length === 0 ? 'none' : 'rescue', rescuable, lost, presence };
}

/** Said when libvirtd is not running and none of its guests runs. */
export const NOTHING_TO_STOP = 'libvirtd is not running and none of its guests runs: no guests to stop';

/** Rescue drivers for the unreachable libvirt connections that can be rescued; the others are named in `lost`. */
export async function rescueDrivers(
  unreachable: readonly Unreachable[],
  settings: Settings,
  log: Log,
  signal: AbortSignal,
  deps: RescueDeps = {},
): Promise<{ drivers: DomainDriver[]; lost: Unreachable[] }> {
  const { kind, rescuable, lost, presence } = await assessRescue(unreachable, settings, signal, deps);
  if (kind === 'none') log.notice(NOTHING_TO_STOP);
  if (kind !== 'rescue' || !presence) return { drivers: [], lost };
  if (!presence.running) {
    log.error(`libvirtd is not running, but its guests still run (${presence.liveGuests.join(', ')}): rescue path — bringing them down through their QMP monitors`);
  } else {
    log.error(`libvirtd does not answer (${rescuable.map((u) => u.error).join('; ')}): rescue path — ending it and bringing its guests down through their QMP monitors`);
    try {
      await (deps.releaseMonitors ?? killHungLibvirtd)(settings, log, signal);
    } catch (err) {
      log.error(`rescue: could not end the hung libvirtd: ${errorMessage(err)}; trying the monitors anyway`);
    }
  }
  const make = deps.createRescueDriver ?? ((uri: string, l: Log) => createLibvirtRescueDriver({ uri, log: l }));
  // One libvirtd, one set of status files: one rescue driver even when both spellings of the URI are configured.
  return { drivers: [make(rescuable[0]!.uri, log)], lost };
}
