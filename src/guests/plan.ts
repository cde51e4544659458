// The plan: per active guest, before anything is done, what stop will do to it,
// its timeout and order group, and why (save blockers, transient, the save
// directory's free space against the guests' memory).
import type { Settings, ShutdownAction } from '../config/settings.js';
import type { DomainDriver, Guest } from '../domain/types.js';
import { errorMessage } from '../util/error-message.js';
import { anySignal, deadline } from '../util/deadline.js';
import { mib } from '../util/units.js';
import { freeSpace, type FreeSpace } from './free-space.js';
import { estimateReason, estimateSaveQueue, PLAN_SAVE_RATE_BYTES_PER_S } from './save-slots.js';

/** What the ladder starts with for a guest. */
export type PlanAction = 'save' | 'shutdown' | 'destroy';

/** `policy`: ON_SHUTDOWN and each guest's policy (`stop`); `shutdown`: ACPI for every guest (`shutdown`, `guests_shutdown`). */
export type StopMode = 'policy' | 'shutdown';

/** One guest's plan. */
export interface GuestPlan {
  guest: Guest;
  /** What the settings and the guest's policy asked for. */
  requested: ShutdownAction;
  /** What will be done first (the ladder may still fall back from save to shutdown, and destroys at the deadline). */
  action: PlanAction;
  /** Seconds from the start of its order group until it is destroyed. */
  timeout: number;
  order: number;
  /** Paused guest: resumed first so that it can act on the ACPI request. */
  resumeFirst: boolean;
  /** Why the action differs from the request, and other facts worth knowing. */
  reasons: string[];
  /** The save directory counted against (save only). */
  saveDirectory?: string;
}

/** A connection whose guests could not be listed. */
export interface Unreachable {
  uri: string;
  error: string;
  hung: boolean;
}

/** The free space of one save directory, and what the plan puts in it. */
export interface SpaceReport {
  directory: string;
  /** Bytes available to us, when statfs worked. */
  freeBytes?: number;
  /** Kept free: MARGIN_BYTES plus 2 % of the file system. */
  marginBytes: number;
  /** Memory of the guests planned for save there, in bytes (an upper bound of their images). */
  plannedBytes: number;
  /** Why the space is unknown. */
  error?: string;
}

/** A whole plan: every active guest, and the save directories. */
export interface StopPlan {
  mode: StopMode;
  guests: GuestPlan[];
  space: SpaceReport[];
  /** Connections that could not be listed, with why; `hung`: the daemon did not answer a ping (the rescue path applies). */
  unreachable: Unreachable[];
  /** What may go wrong at stop (the save queue cannot finish within the timeouts at the planned save rate). */
  warnings?: string[];
}

/** What the plan is decided from. */
export type PlanSettings = Pick<Settings, 'onShutdown' | 'timeout'> & Partial<Pick<Settings, 'parallel'>>;

/** How long a driver's ping (libvirt: `virsh version`) may take before its daemon counts as hung. */
export const PING_TIMEOUT_MS = 10_000;
/** How long listing one connection's guests may take (many guests, a busy host) before it is given up. */
export const LIST_TIMEOUT_MS = 60_000;

/** Always kept free in a save directory, on top of 2 % of its file system. */
export const MARGIN_BYTES = 64 * 1024 * 1024;

/** A guest together with the driver that controls it. */
export interface DriverGuest {
  guest: Guest;
  driver: DomainDriver;
}

/** Decide the plan from listed guests and measured free space; pure, so it is tested without I/O. */
export function decidePlan(
  items: readonly DriverGuest[],
  settings: PlanSettings,
  mode: StopMode,
  space: ReadonlyMap<string, FreeSpace>,
): Omit<StopPlan, 'unreachable'> {
  const active = items.filter((i) => i.guest.state !== 'shutoff');
  const plans = new Map<DriverGuest, GuestPlan>();
  for (const item of active) plans.set(item, firstChoice(item, settings, mode));

  // Fill each save directory greedily, smallest guests first (the most guests saved), with a margin.
  const reports: SpaceReport[] = [];
  const byDir = new Map<string, DriverGuest[]>();
  for (const item of active) {
    if (plans.get(item)?.action !== 'save') continue;
    const dir = item.driver.saveDirectory;
    byDir.set(dir, [...(byDir.get(dir) ?? []), item]);
  }
  for (const [dir, list] of byDir) {
    const fs = space.get(dir) ?? { error: 'not measured' };
    const margin = MARGIN_BYTES + Math.round(0.02 * (fs.totalBytes ?? 0));
    const report: SpaceReport = { directory: dir, marginBytes: margin, plannedBytes: 0 };
    if (fs.freeBytes === undefined) report.error = fs.error ?? 'unknown';
    else report.freeBytes = fs.freeBytes;
    reports.push(report);
    const sorted = [...list].sort((a, b) => a.guest.memoryKiB - b.guest.memoryKiB || a.guest.name.localeCompare(b.guest.name));
    for (const item of sorted) {
      const plan = plans.get(item) as GuestPlan;
      const need = item.guest.memoryKiB * 1024;
      plan.saveDirectory = dir;
      if (fs.freeBytes === undefined) {
        toShutdown(plan, `save directory ${dir} cannot be measured (${report.error}): shut down instead`);
      } else if (report.plannedBytes + need + margin > fs.freeBytes) {
        toShutdown(plan, `does not fit in ${dir}: needs up to ${mib(need)}, ${mib(Math.max(0, fs.freeBytes - report.plannedBytes - margin))} left after the margin of ${mib(margin)}: shut down instead`);
      } else {
        report.plannedBytes += need;
      }
    }
  }
  for (const plan of plans.values()) settlePaused(plan, active.find((i) => i.guest === plan.guest)?.driver);
  const guests = [...plans.values()];
  return { mode, guests, space: reports, warnings: checkSaveQueue(guests, settings.parallel ?? 0) };
}

// The saves of each order group, in the order they wait for slots, at the
// planned rate: a reason on each guest the queue puts at risk, and a warning per group.
function checkSaveQueue(guests: readonly GuestPlan[], parallel: number): string[] {
  const warnings: string[] = [];
  for (const order of [...new Set(guests.map((g) => g.order))].sort((a, b) => b - a)) {
    const saves = guests.filter((g) => g.order === order && g.action === 'save');
    const queued = saves.map((g) => ({ name: g.guest.name, memoryBytes: g.guest.memoryKiB * 1024, timeoutS: g.timeout }));
    const estimates = estimateSaveQueue(queued, parallel);
    let late = 0;
    let over = 0;
    estimates.forEach((e, i) => {
      const why = estimateReason(queued[i]!, e, parallel);
      if (why) saves[i]!.reasons.push(why);
      if (e.fate === 'late') late++;
      if (e.fate === 'over') over++;
    });
    if (late + over === 0) continue;
    const need = Math.max(...estimates.map((e) => e.endS));
    const what = [late ? `${late} may get no save slot in time (shut down instead)` : '', over ? `${over} may still be saving at the timeout (aborted, destroyed)` : ''].filter(Boolean).join(', ');
    warnings.push(`order group ${order}: at ${PLAN_SAVE_RATE_BYTES_PER_S / 1024 / 1024} MiB/s per save and PARALLEL=${parallel}, its ${saves.length} saves need about ${need.toFixed(0)} s, more than their timeouts allow: ${what}`);
  }
  return warnings;
}

/** List every connection's guests and measure the save directories, then decide. */
export async function buildStopPlan(
  drivers: readonly DomainDriver[],
  settings: PlanSettings,
  mode: StopMode,
  signal: AbortSignal,
): Promise<StopPlan & { items: DriverGuest[] }> {
  const items: DriverGuest[] = [];
  const unreachable: Unreachable[] = [];
  await Promise.all(drivers.map(async (driver) => {
    const dl = deadline(LIST_TIMEOUT_MS, signal);
    const cut = new AbortController();
    const listSignal = anySignal(dl.signal, cut.signal);
    try {
      // The listing starts at once; a driver that can be pinged (libvirt) is
      // asked alongside, briefly: no answer means the daemon hangs, and the
      // listing is called off.
      const listing = driver.listGuests({ signal: listSignal.signal });
      listing.catch(() => undefined);
      if (driver.ping) {
        try {
          await driver.ping({ signal, timeoutMs: PING_TIMEOUT_MS });
        } catch (err) {
          cut.abort(new Error('libvirtd does not answer'));
          if (signal.aborted) throw err;
          unreachable.push({ uri: driver.uri, error: errorMessage(err), hung: true });
          return;
        }
      }
      try {
        for (const guest of await listing) items.push({ guest, driver });
      } catch (err) {
        if (signal.aborted) throw err;
        unreachable.push({ uri: driver.uri, error: dl.signal.aborted ? `no list of guests within ${LIST_TIMEOUT_MS / 1000} s` : errorMessage(err), hung: false });
      }
    } finally {
      listSignal.clear();
      dl.clear();
    }
  }));
  const space = new Map<string, FreeSpace>();
  if (mode === 'policy') {
    for (const dir of new Set(drivers.map((d) => d.saveDirectory))) space.set(dir, await freeSpace(dir, signal));
  }
  const plan = decidePlan(items, settings, mode, space);
  return { ...plan, unreachable, items: items.filter((i) => i.guest.state !== 'shutoff') };
}

function firstChoice(item: DriverGuest, settings: PlanSettings, mode: StopMode): GuestPlan {
  const { guest } = item;
  const requested: ShutdownAction = mode === 'shutdown' ? 'shutdown' : guest.policy.onShutdown ?? settings.onShutdown;
  const reasons: string[] = [];
  if (mode === 'policy' && guest.policy.onShutdown) reasons.push(`policy on_shutdown=${guest.policy.onShutdown}`);
  let action: PlanAction = requested === 'managedsave' ? 'save' : requested;
  if (action === 'save') {
    if (!guest.persistent) {
      action = 'shutdown';
      reasons.push('transient: cannot be saved, shut down instead (it is gone once off)');
    } else if (guest.saveBlockers.length > 0) {
      action = 'shutdown';
      reasons.push(`cannot be saved (${guest.saveBlockers.join('; ')}): shut down instead`);
    } else if (guest.state === 'suspended' && !item.driver.wake) {
      action = 'shutdown';
      reasons.push(`state ${guest.stateDetail}: this driver cannot wake it for a save, shut down instead`);
    } else if (guest.state === 'other') {
      action = 'shutdown';
      reasons.push(`state ${guest.stateDetail}: not saved, shut down instead`);
    }
  }
  if (guest.state === 'suspended') reasons.push(item.driver.wake ? 'suspended (S3): woken first' : 'suspended (S3), and this driver cannot wake it: it may not act on the ACPI request (destroyed at its deadline if it does not)');
  return {
    guest,
    requested,
    action,
    timeout: guest.policy.timeout ?? settings.timeout,
    order: guest.policy.order ?? 0,
    resumeFirst: false,
    reasons,
  };
}

function toShutdown(plan: GuestPlan, reason: string): void {
  plan.action = 'shutdown';
  plan.reasons.push(reason);
}

// A paused guest is saved as paused; one planned for shutdown cannot act on the
// ACPI request while paused: it is resumed first when the driver can, else saved
// when it can be, else the plan says it will be destroyed at its deadline.
function settlePaused(plan: GuestPlan, driver: DomainDriver | undefined): void {
  if (plan.guest.state !== 'paused') return;
  if (plan.action === 'save') {
    plan.reasons.push('paused: saved as paused, comes back paused');
  } else if (plan.action === 'shutdown') {
    if (driver?.resume) {
      plan.resumeFirst = true;
      plan.reasons.push('paused: resumed first so that it can shut down (ACPI)');
    } else {
      plan.reasons.push('paused, and this driver cannot resume it: it may not act on the ACPI request (destroyed at its deadline if it does not)');
    }
  }
}
