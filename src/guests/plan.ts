// The plan: per active guest, before anything is done, what stop will do to it,
// its timeout and order group, and why (save blockers, transient, the save
// directory's free space against the guests' memory).
import type { Settings, ShutdownAction } from '../config/settings.js';
import type { DomainDriver, Guest, GuestFact } from '../domain/types.js';
import { errorMessage } from '../util/error-message.js';
import { anySignal, deadline, now } from '../util/deadline.js';
import type { Log } from '../util/log.js';
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
  /** Its daemon did not answer (no call answered within HUNG_WINDOW_MS, or the connection was refused): the rescue path applies. */
  hung: boolean;
  /** What was asked, when, and what answered (the hung verdict's evidence). */
  evidence?: string[];
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

/**
 * A daemon (libvirtd) counts as hung only when nothing answers within this
 * window: neither a ping (`virsh version`, a new one every PING_RETRY_MS, each
 * allowed to run to the window's end) nor any call of the listing. At least 15 s.
 */
export const HUNG_WINDOW_MS = 20_000;
/** A new ping is asked this often within HUNG_WINDOW_MS until something answers. */
export const PING_RETRY_MS = 5_000;
/**
 * The first ping waits this long for the listing to answer first (it usually
 * does within a few hundred ms: then no ping is asked, and no virsh process
 * competes with the listing's); a listing that fails sends it at once.
 */
export const FIRST_PING_MS = 1_000;
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
  log?: Log,
): Promise<StopPlan & { items: DriverGuest[] }> {
  const items: DriverGuest[] = [];
  const unreachable: Unreachable[] = [];
  await Promise.all(drivers.map(async (driver) => {
    const dl = deadline(LIST_TIMEOUT_MS, signal);
    const cut = new AbortController();
    const listSignal = anySignal(dl.signal, cut.signal);
    // A driver that can be pinged (libvirt) is watched while it lists: the
    // listing is called off only when nothing at all answers within the window.
    const watch = driver.ping ? watchDaemon(driver.ping.bind(driver), signal) : undefined;
    try {
      const listing = driver.listGuests({ signal: listSignal.signal, onAnswer: (what) => watch?.answered(what) });
      // A listing that failed (virsh could not connect, say) does not wait for the first ping: refused or not, the verdict comes from it.
      listing.then(() => watch?.answered('the listing'), () => watch?.pingNow());
      if (watch) {
        const seen = await watch.verdict;
        if (signal.aborted) throw signal.reason;
        if (seen.verdict !== 'answered') {
          cut.abort(new Error('libvirtd does not answer'));
          const error = seen.verdict === 'silent'
            ? `no answer within ${HUNG_WINDOW_MS / 1000} s (${seen.pings} ping${seen.pings === 1 ? '' : 's'} asked, no call of the listing answered)`
            : seen.refusal ?? 'connection refused';
          // Refused: nothing listens (libvirtd down); the rescue path says what that means. Silence is the hung verdict.
          if (seen.verdict === 'silent') log?.error(`${driver.uri}: counted as hung: ${seen.evidence.join('; ')}`);
          else log?.info(`${driver.uri}: connection refused: ${seen.evidence.join('; ')}`);
          unreachable.push({ uri: driver.uri, error, hung: true, evidence: seen.evidence });
          return;
        }
        if (seen.slow) log?.warn(`${driver.uri}: slow to answer its ping, but not hung: ${seen.evidence.join('; ')}`);
        else log?.debug(`${driver.uri}: answers: ${seen.evidence.join('; ')}`);
      }
      try {
        for (const guest of await listing) items.push({ guest, driver });
      } catch (err) {
        if (signal.aborted) throw err;
        unreachable.push({ uri: driver.uri, error: dl.signal.aborted ? `no list of guests within ${LIST_TIMEOUT_MS / 1000} s` : errorMessage(err), hung: false });
      }
    } finally {
      watch?.stop();
      listSignal.clear();
      dl.clear();
    }
  }));
  const space = new Map<string, FreeSpace>();
  if (mode === 'policy') {
    for (const dir of new Set(drivers.map((d) => d.saveDirectory))) space.set(dir, await freeSpace(dir, signal));
  }
  const once = onePerGuest(items, drivers, log);
  const plan = decidePlan(once, settings, mode, space);
  return { ...plan, unreachable, items: once.filter((i) => i.guest.state !== 'shutoff') };
}

/** How a daemon's watch ended: something answered, the connection was refused (nothing listens), or silence for the whole window. */
export interface DaemonVerdict {
  verdict: 'answered' | 'refused' | 'silent';
  /** What was asked and what answered, with the time since the watch began. */
  evidence: string[];
  /** Pings asked. */
  pings: number;
  /** A ping failed or had not answered within PING_RETRY_MS before the answer came. */
  slow: boolean;
  /** The refused ping's error. */
  refusal?: string;
}

/**
 * Watch whether a daemon answers: a ping after FIRST_PING_MS (at once on
 * `pingNow`, when the listing failed) and a new one every PING_RETRY_MS,
 * each allowed to run past the window's end; `answered` is called for any
 * other call that answered (the listing's). The verdict is `answered` at the
 * first answer, `refused` when a ping fails before the window ends (virsh
 * could not connect: no daemon listens), else `silent` once HUNG_WINDOW_MS
 * passed without any answer. Interrupted: `silent`.
 */
export function watchDaemon(
  ping: (o: { signal: AbortSignal; timeoutMs?: number }) => Promise<void>,
  signal: AbortSignal,
): { verdict: Promise<DaemonVerdict>; answered: (what: string) => void; pingNow: () => void; stop: () => void } {
  const t0 = now();
  const evidence: string[] = [];
  const at = (): string => `+${((now() - t0) / 1000).toFixed(1)} s`;
  const end = new AbortController();
  const pings = anySignal(signal, end.signal);
  let pingsAsked = 0;
  let slow = false;
  let resolve!: (v: DaemonVerdict) => void;
  const verdict = new Promise<DaemonVerdict>((r) => (resolve = r));
  let timer: ReturnType<typeof setInterval> | undefined;
  let window: ReturnType<typeof setTimeout> | undefined;
  let first: ReturnType<typeof setTimeout> | undefined;
  const finish = (v: DaemonVerdict['verdict'], line: string, refusal?: string): void => {
    if (end.signal.aborted) return;
    evidence.push(`${at()}: ${line}`);
    stop();
    const out: DaemonVerdict = { verdict: v, evidence, pings: pingsAsked, slow };
    if (refusal !== undefined) out.refusal = refusal;
    resolve(out);
  };
  const stop = (): void => {
    clearInterval(timer);
    clearTimeout(window);
    clearTimeout(first);
    signal.removeEventListener('abort', onAbort);
    if (!end.signal.aborted) end.abort(new Error('watch ended'));
    pings.clear();
  };
  const onAbort = (): void => finish('silent', 'interrupted');
  const answered = (what: string): void => finish('answered', `${what} answered`);
  const askPing = (): void => {
    if (end.signal.aborted || now() - t0 >= HUNG_WINDOW_MS) return;
    const n = ++pingsAsked;
    if (n > 1) slow = true;
    evidence.push(`${at()}: ping ${n} asked`);
    // Each ping may run a second past the window: silence is the window's verdict, not the ping's.
    const timeoutMs = HUNG_WINDOW_MS - (now() - t0) + 1000;
    ping({ signal: pings.signal, timeoutMs }).then(
      () => answered(`ping ${n}`),
      (err: unknown) => {
        if (end.signal.aborted) return;
        slow = true;
        finish('refused', `ping ${n} failed at once: ${errorMessage(err)}`, errorMessage(err));
      },
    );
  };
  if (signal.aborted) onAbort();
  else {
    signal.addEventListener('abort', onAbort, { once: true });
    timer = setInterval(askPing, PING_RETRY_MS);
    window = setTimeout(() => finish('silent', `nothing answered within ${HUNG_WINDOW_MS / 1000} s`), HUNG_WINDOW_MS);
    first = setTimeout(askPing, FIRST_PING_MS);
  }
  // The first ping at once, unless one was asked already.
  const pingNow = (): void => {
    clearTimeout(first);
    if (pingsAsked === 0) askPing();
  };
  return { verdict, answered, pingNow, stop };
}

/** The line that names every active guest handled without its full description (what was missing and why), or undefined when there is none. */
export function undescribedNote(plan: Pick<StopPlan, 'guests'>, showUri = false): string | undefined {
  const parts = plan.guests.filter((p) => p.guest.undescribed).map((p) => {
    const g = p.guest;
    const u = g.undescribed!;
    const label = `'${g.name}'${g.name === g.id ? '' : ` (${g.id})`}${showUri ? ` on ${g.uri}` : ''}`;
    return `${label}: ${p.action} with defaults for ${u.missing.join(', ') || 'nothing'} (${u.problems.join('; ')})`;
  });
  return parts.length ? `not described in time, handled with safe defaults: ${parts.join('; ')}` : undefined;
}

function firstChoice(item: DriverGuest, settings: PlanSettings, mode: StopMode): GuestPlan {
  const { guest } = item;
  const requested: ShutdownAction = mode === 'shutdown' ? 'shutdown' : guest.policy.onShutdown ?? settings.onShutdown;
  const reasons: string[] = [];
  if (mode === 'policy' && guest.policy.onShutdown) reasons.push(`policy on_shutdown=${guest.policy.onShutdown}`);
  if (guest.staleImage) reasons.push(`${guest.staleImage} is older than the running guest: never restored, set aside as it is saved or shut down`);
  let action: PlanAction = requested === 'managedsave' ? 'save' : requested;
  const missing = new Set<GuestFact>(guest.undescribed?.missing ?? []);
  if (guest.undescribed) {
    reasons.push(`not described in time (${guest.undescribed.problems.join('; ') || 'no answer'})`);
    if (missing.has('identity')) reasons.push('name and persistence unknown: handled by UUID, counted as persistent');
    if (missing.has('policy')) reasons.push("policy unknown: the settings' defaults");
  }
  if (action === 'save') {
    if (missing.has('state')) {
      action = 'shutdown';
      reasons.push('state unknown: shut down instead (destroyed only at its deadline)');
    } else if (missing.has('memory')) {
      action = 'shutdown';
      reasons.push('memory unknown: cannot be counted against the save directory, shut down instead');
    } else if (!guest.persistent) {
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
    } else if (missing.has('saveBlockers')) {
      reasons.push('save blockers unknown: the save is tried (shut down if it fails)');
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

/**
 * Each guest once: two libvirt connections to the same daemon (URIS with
 * `qemu:///system` and its socket path, say) list the same guests, by the same
 * UUID. A guest is handled through the first connection of `drivers` that lists
 * it; the others are named in a notice. Guests of other drivers are kept as listed.
 */
export function onePerGuest(items: readonly DriverGuest[], drivers: readonly DomainDriver[], log?: Log): DriverGuest[] {
  const rank = (d: DomainDriver): number => drivers.indexOf(d);
  const sorted = [...items].sort((a, b) => rank(a.driver) - rank(b.driver));
  const first = new Map<string, DriverGuest>();
  const out: DriverGuest[] = [];
  for (const item of sorted) {
    if (item.driver.kind !== 'libvirt') {
      out.push(item);
      continue;
    }
    const key = item.guest.id.toLowerCase();
    const seen = first.get(key);
    if (seen) {
      log?.notice(`guest '${item.guest.name}' (${item.guest.id}) is listed by ${seen.driver.uri} and ${item.driver.uri}: handled once, through ${seen.driver.uri}`);
      continue;
    }
    first.set(key, item);
    out.push(item);
  }
  return out;
}
