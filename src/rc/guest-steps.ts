// The seam between the daemon side of rc.libvirt (start/stop/status) and the
// guest side (plan, ladder, journal): stop and start the guests, reboot them,
// show the plan, and list what waits to be restored.
import type { Settings } from '../config/settings.js';
import type { DomainDriver, Guest } from '../domain/types.js';
import type { Log } from '../util/log.js';
import { errorMessage } from '../util/error-message.js';
import { now } from '../util/deadline.js';
import { closeDrivers, openDrivers } from '../guests/open-drivers.js';
import { buildStopPlan, undescribedNote, type StopMode, type StopPlan, type Unreachable } from '../guests/plan.js';
import { stopAll } from '../guests/ladder.js';
import { openJournal, readJournal, type JournalEntry } from '../guests/journal.js';
import { restoreAll, type RestoreTask } from '../guests/restore.js';
import { rebootAll } from '../guests/reboot.js';
import { assessRescue, NOTHING_TO_STOP, rescueDrivers, type RescueDeps } from '../guests/rescue.js';
import type { GuestOutcome } from '../guests/outcome.js';
import { createProgress, guestLabel } from '../report/guest-progress.js';
import { reportSummary } from '../report/summary.js';
import { formatPlan, planToJson } from '../report/plan-output.js';

/** What a guest step runs with. */
export interface GuestStepContext {
  settings: Settings;
  log: Log;
  /** Aborts on SIGINT/SIGTERM: no new work starts, what runs is brought to a safe state. */
  signal: AbortSignal;
  dryRun: boolean;
  /** Output stream for progress and the summary (a TTY gets live lines). */
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
}

/** The outcome of a guest step, for the summary and the exit code. */
export interface GuestStepOutcome {
  /** No guest was destroyed and nothing failed. */
  clean: boolean;
  /** Guests that had to be destroyed, by name. */
  destroyed: string[];
  /** Guests whose action failed, by name. */
  failed: string[];
  /** Every guest's outcome (empty on a dry run). */
  outcomes?: GuestOutcome[];
}

/** Injection points (tests): where the drivers come from, how a hung libvirtd is handled. */
export interface GuestStepDeps extends RescueDeps {
  openDrivers?: (settings: Settings, signal: AbortSignal, log?: Log) => Promise<DomainDriver[]>;
}

const CLEAN: GuestStepOutcome = { clean: true, destroyed: [], failed: [], outcomes: [] };

/** Bring every active guest down at `stop` (per policy) or `shutdown` (ACPI for all). */
export async function stopGuests(ctx: GuestStepContext, mode: StopMode, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  const t0 = now();
  const drivers = await (deps.openDrivers ?? openDrivers)(ctx.settings, ctx.signal, ctx.log);
  try {
    let plan = await buildStopPlan(drivers, ctx.settings, mode, ctx.signal, ctx.log);
    const showUri = drivers.length > 1;
    let explained: readonly Unreachable[] = [];
    if (plan.unreachable.length > 0 && ctx.dryRun) ({ plan, explained } = await dryRunRescue(plan, ctx, deps));
    else if (plan.unreachable.length > 0) plan = await withRescue(plan, drivers, t0, ctx, mode, deps);
    for (const u of plan.unreachable) if (!explained.includes(u)) ctx.log.error(`connection ${u.uri} does not answer: ${u.error}; its guests are not handled`);
    if (ctx.dryRun) {
      ctx.stdout.write(`${formatPlan(plan, showUri)}\n(dry run: nothing was changed)\n`);
      return unreachableOutcome(plan, CLEAN);
    }
    for (const p of plan.guests) if (p.reasons.length) ctx.log.info(`${guestLabel(p.guest, showUri)}: ${p.action}: ${p.reasons.join('; ')}`);
    const read = await readJournal(ctx.settings.stateDir);
    if (read.damaged) ctx.log.error(read.damaged);
    const journal = openJournal(ctx.settings.stateDir, read.entries);
    const progress = createProgress({ out: ctx.stdout, log: ctx.log, showUri });
    let outcomes: GuestOutcome[];
    try {
      outcomes = await stopAll(plan.guests.map((p) => ({ plan: p, driver: plan.items.find((i) => i.guest === p.guest)!.driver })), {
        parallel: ctx.settings.parallel,
        signal: ctx.signal,
        observer: progress,
        onOutcome: async (o) => {
          const p = plan.guests.find((x) => x.guest === o.guest);
          if (!p || !o.guest.persistent) return;
          const action = o.result === 'saved' ? 'saved' : o.result === 'shutdown' ? 'shutdown' : o.result === 'destroyed' ? 'destroyed' : undefined;
          if (!action || (o.stateBefore !== 'running' && o.stateBefore !== 'paused')) return;
          await journal.record({ uri: o.guest.uri, id: o.guest.id, name: o.guest.name, action, stateBefore: o.stateBefore, order: p.order, at: new Date().toISOString() });
        },
      });
    } finally {
      progress.stop();
    }
    const what = mode === 'shutdown' ? 'guests shut down' : 'guests stopped';
    const summary = reportSummary(ctx.signal.aborted ? `${what} (interrupted)` : what, outcomes, now() - t0, ctx.stdout, ctx.log, showUri);
    const note = undescribedNote(plan, showUri);
    if (note) ctx.log.error(note);
    return unreachableOutcome(plan, { ...summary, clean: summary.clean && !ctx.signal.aborted, outcomes });
  } finally {
    await closeDrivers(drivers);
  }
}

/** The least time a rescued guest gets for a clean power-off, whatever the detection of the hung daemon took. */
export const RESCUE_MIN_TIMEOUT_S = 5;

// libvirtd did not answer: plan the guests of its status files on a rescue driver,
// their timeouts shortened by the time the detection took, so stop still ends within TIMEOUT + STOP_MARGIN_MS.
async function withRescue(plan: PlanWithItems, drivers: DomainDriver[], t0: number, ctx: GuestStepContext, mode: StopMode, deps: GuestStepDeps): Promise<PlanWithItems> {
  const { drivers: rescue, lost } = await rescueDrivers(plan.unreachable, ctx.settings, ctx.log, ctx.signal, deps);
  // No rescue driver: what could not be rescued stays unreachable (libvirtd not running with no guest left is not a failure).
  if (rescue.length === 0) return { ...plan, unreachable: lost };
  drivers.push(...rescue);
  const rp = await buildStopPlan(rescue, ctx.settings, mode, ctx.signal);
  const spent = (now() - t0) / 1000;
  for (const g of rp.guests) {
    const t = Math.max(RESCUE_MIN_TIMEOUT_S, Math.floor(g.timeout - spent));
    if (t !== g.timeout) g.reasons.push(`timeout ${g.timeout} s shortened to ${t} s: ${spent.toFixed(0)} s went to finding libvirtd hung`);
    g.timeout = t;
  }
  return { ...plan, guests: [...plan.guests, ...rp.guests], items: [...plan.items, ...rp.items], space: [...plan.space, ...rp.space], unreachable: [...lost, ...rp.unreachable] };
}

type PlanWithItems = Awaited<ReturnType<typeof buildStopPlan>>;

// --dry-run: say what the rescue path would do, changing nothing; `explained`: unreachable connections the rescue path would handle.
async function dryRunRescue(plan: PlanWithItems, ctx: GuestStepContext, deps: GuestStepDeps): Promise<{ plan: PlanWithItems; explained: Unreachable[] }> {
  const { kind, rescuable, lost, presence } = await assessRescue(plan.unreachable, ctx.settings, ctx.signal, deps);
  if (kind === 'none') {
    ctx.log.notice(NOTHING_TO_STOP);
    return { plan: { ...plan, unreachable: lost }, explained: [] };
  }
  if (kind === 'rescue' && presence) {
    const names = presence.liveGuests.map((n) => `'${n}'`).join(', ');
    ctx.log.warn(`libvirtd ${presence.running ? 'does not answer' : 'is not running'}: stop would take the rescue path${presence.running ? ' (end libvirtd)' : ''} and shut down through their QMP monitors: ${names}`);
    return { plan, explained: rescuable };
  }
  return { plan, explained: [] };
}

// Unreachable connections fail the step; so does a guest handled without its full description (named by undescribedNote).
function unreachableOutcome(plan: StopPlan, o: GuestStepOutcome): GuestStepOutcome {
  const undescribed = plan.guests.some((p) => p.guest.undescribed);
  if (plan.unreachable.length === 0 && !undescribed) return o;
  return { ...o, clean: false, failed: [...o.failed, ...plan.unreachable.map((u) => `(all guests of ${u.uri})`)] };
}

/** The plan `stop` (or `shutdown`) would carry out, printed as a table or JSON; changes nothing. */
export async function showPlan(ctx: GuestStepContext, mode: StopMode, json: boolean, deps: GuestStepDeps = {}): Promise<StopPlan> {
  const drivers = await (deps.openDrivers ?? openDrivers)(ctx.settings, ctx.signal, ctx.log);
  try {
    const plan = await buildStopPlan(drivers, ctx.settings, mode, ctx.signal, ctx.log);
    ctx.stdout.write(json ? `${JSON.stringify(planToJson(plan), null, 2)}\n` : `${formatPlan(plan, drivers.length > 1)}\n`);
    return plan;
  } finally {
    await closeDrivers(drivers);
  }
}

/** Bring back, at `start`, the guests the last stop handled (ON_BOOT=restore). */
export async function startGuests(ctx: GuestStepContext, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  const t0 = now();
  const read = await readJournal(ctx.settings.stateDir);
  if (read.damaged) ctx.log.error(`${read.damaged}; restoring every guest that has a saved image instead`);
  const drivers = await (deps.openDrivers ?? openDrivers)(ctx.settings, ctx.signal, ctx.log);
  try {
    const tasks: RestoreTask[] = read.entries.map((entry) => ({ entry }));
    const known = new Set(read.entries.map((e) => `${e.uri}\u0000${e.id}`));
    // Safety nets: a damaged journal must not make saved guests be forgotten; qmp guests have no daemon to autostart them.
    for (const d of drivers) {
      if (!read.damaged && d.kind !== 'qmp') continue;
      let guests;
      try {
        guests = await d.listGuests({ signal: ctx.signal });
      } catch (err) {
        ctx.log.error(`connection ${d.uri}: cannot list guests: ${errorMessage(err)}`);
        continue;
      }
      for (const g of guests) {
        if (g.state !== 'shutoff' || known.has(`${g.uri}\u0000${g.id}`)) continue;
        const source = read.damaged && g.hasSavedImage ? 'not in the (damaged) journal, has a saved image' : d.kind === 'qmp' && g.autostart ? 'autostart' : undefined;
        if (!source) continue;
        const entry: JournalEntry = { uri: g.uri, id: g.id, name: g.name, action: g.hasSavedImage ? 'saved' : 'shutdown', stateBefore: 'running', order: g.policy.order ?? 0, at: '' };
        tasks.push({ entry, source });
      }
    }
    if (ctx.dryRun) {
      ctx.stdout.write(tasks.length === 0 ? 'no guests to bring back\n' : `${tasks
        .sort((a, b) => a.entry.order - b.entry.order)
        .map((t) => `order ${t.entry.order}: ${guestLabel(t.entry, drivers.length > 1)}: ${t.entry.action === 'saved' ? 'restore' : 'start'}${t.entry.stateBefore === 'paused' ? ' (paused)' : ''}${t.source ? ` (${t.source})` : ''}`)
        .join('\n')}\n(dry run: nothing was changed)\n`);
      return CLEAN;
    }
    const journal = openJournal(ctx.settings.stateDir, read.entries);
    const progress = createProgress({ out: ctx.stdout, log: ctx.log, showUri: drivers.length > 1 });
    let outcomes: GuestOutcome[];
    try {
      outcomes = await restoreAll(tasks, {
        drivers,
        journal,
        timeout: ctx.settings.timeout,
        onBoot: ctx.settings.onBoot,
        startDelay: ctx.settings.startDelay,
        parallel: ctx.settings.parallel,
        signal: ctx.signal,
        observer: progress,
      });
    } finally {
      progress.stop();
    }
    const summary = reportSummary('guests brought back', outcomes, now() - t0, ctx.stdout, ctx.log, drivers.length > 1);
    return { ...summary, clean: summary.clean && !ctx.signal.aborted, outcomes };
  } finally {
    await closeDrivers(drivers);
  }
}

/** guests_reboot: every running guest at once, each waited for until it runs again or its timeout. */
export async function rebootGuests(ctx: GuestStepContext, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  const t0 = now();
  const drivers = await (deps.openDrivers ?? openDrivers)(ctx.settings, ctx.signal, ctx.log);
  try {
    const items: { guest: Guest; driver: DomainDriver }[] = [];
    let unreachable = false;
    for (const d of drivers) {
      try {
        for (const g of await d.listGuests({ signal: ctx.signal })) if (g.state === 'running') items.push({ guest: g, driver: d });
      } catch (err) {
        unreachable = true;
        ctx.log.error(`connection ${d.uri}: cannot list guests: ${errorMessage(err)}`);
      }
    }
    if (ctx.dryRun) {
      ctx.stdout.write(`${items.map((i) => `${guestLabel(i.guest, drivers.length > 1)}: reboot (timeout ${i.guest.policy.timeout ?? ctx.settings.timeout} s)`).join('\n') || 'no running guests'}\n(dry run: nothing was changed)\n`);
      return CLEAN;
    }
    const progress = createProgress({ out: ctx.stdout, log: ctx.log, showUri: drivers.length > 1 });
    let outcomes: GuestOutcome[];
    try {
      outcomes = await rebootAll(items, { timeout: ctx.settings.timeout, parallel: ctx.settings.parallel, signal: ctx.signal, observer: progress });
    } finally {
      progress.stop();
    }
    const summary = reportSummary('guests rebooted', outcomes, now() - t0, ctx.stdout, ctx.log, drivers.length > 1);
    return { ...summary, clean: summary.clean && !unreachable && !ctx.signal.aborted, outcomes };
  } finally {
    await closeDrivers(drivers);
  }
}

/** A guest the journal says is waiting to be restored at the next start. */
export interface PendingGuest {
  uri: string;
  id: string;
  name: string;
  /** What stop did: `saved`, `shutdown`, `destroyed`. */
  action: string;
  /** State before stop: running or paused. */
  stateBefore: string;
}

/** The guests waiting to be restored (for `status`); never changes anything (a damaged journal is reported, left in place). */
export async function pendingGuests(settings: Settings): Promise<PendingGuest[]> {
  const read = await readJournal(settings.stateDir, { keepDamaged: true });
  if (read.damaged) throw new Error(read.damaged);
  return read.entries.map(({ uri, id, name, action, stateBefore }) => ({ uri, id, name, action, stateBefore }));
}
