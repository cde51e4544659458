// The seam between the daemon side of rc.libvirt (start/stop/status) and the
// guest side (plan, ladder, journal): stop and start the guests, reboot them,
// show the plan, and list what waits to be restored.
import type { Settings } from '../config/settings.js';
import type { DomainDriver, Guest } from '../domain/types.js';
import type { Log } from '../util/log.js';
import { errorMessage } from '../util/error-message.js';
import { now } from '../util/deadline.js';
import { closeDrivers, openDrivers } from '../guests/open-drivers.js';
import { buildStopPlan, onePerGuest, undescribedNote, type StopMode, type StopPlan, type Unreachable } from '../guests/plan.js';
import { stopAll } from '../guests/ladder.js';
import { journalPath, openJournal, readJournal, type Journal, type JournalEntry } from '../guests/journal.js';
import { secureOwnDirs } from '../daemons/runtime-dirs.js';
import { restoreAll, type RestoreTask } from '../guests/restore.js';
import { rebootAll } from '../guests/reboot.js';
import { assessRescue, NOTHING_TO_STOP, rescueDrivers, type RescueDeps } from '../guests/rescue.js';
import type { GuestObserver } from '../guests/observer.js';
import type { GuestOutcome } from '../guests/outcome.js';
import { cutForRescue, journalEntryFor } from '../guests/stop-policy.js';
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
  /** -1 quiet (-q: the summary only when something went wrong), 0 normal, 1+ more detail. */
  verbosity?: number;
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
  /** start: resolves once the daemons the guests need have settled (undefined), or with why not (no guest is started); the listing runs meanwhile. */
  daemonsReady?: Promise<string | undefined>;
  /** stop: called once, as the guests begin to be acted on (after their listing and plan), so the caller can overlap its own work with theirs. */
  acting?: () => void;
}

const CLEAN: GuestStepOutcome = { clean: true, destroyed: [], failed: [], outcomes: [] };

/** The parts of one guest command that differ: what to do, how to show it dry, how to run it. */
interface Batch<P> {
  /** The summary's title. */
  title: string;
  /** Find the guests and decide (after the drivers are open). */
  prepare(drivers: DomainDriver[], t0: number): Promise<P>;
  /** What a dry run prints (before "(dry run: nothing was changed)"). */
  dryRun(prepared: P, showUri: boolean): string;
  /** Act on the guests, telling `observer`; before it, anything to log. */
  run(prepared: P, observer: GuestObserver, showUri: boolean): Promise<GuestOutcome[]>;
  /** Adjust the verdict (connections that could not be listed); default: as it is. */
  settle?(prepared: P, outcome: GuestStepOutcome): GuestStepOutcome;
}

// The one runner of stop, start and reboot: open the drivers, prepare, print a
// dry run or run with live progress, summarize, close the drivers.
async function runBatch<P>(ctx: GuestStepContext, deps: GuestStepDeps, batch: Batch<P>): Promise<GuestStepOutcome> {
  const t0 = now();
  const drivers = await (deps.openDrivers ?? openDrivers)(ctx.settings, ctx.signal, ctx.log);
  try {
    const prepared = await batch.prepare(drivers, t0);
    const showUri = drivers.length > 1;
    const settle = (o: GuestStepOutcome): GuestStepOutcome => batch.settle?.(prepared, o) ?? o;
    if (ctx.dryRun) {
      ctx.stdout.write(`${batch.dryRun(prepared, showUri)}\n(dry run: nothing was changed)\n`);
      return settle(CLEAN);
    }
    const progress = createProgress({ out: ctx.stdout, log: ctx.log, showUri });
    let outcomes: GuestOutcome[];
    try {
      outcomes = await batch.run(prepared, progress, showUri);
    } finally {
      progress.stop();
    }
    const summary = reportSummary(ctx.signal.aborted ? `${batch.title} (interrupted)` : batch.title, outcomes, now() - t0, ctx.stdout, ctx.log, showUri, (ctx.verbosity ?? 0) < 0);
    return settle({ ...summary, clean: summary.clean && !ctx.signal.aborted, outcomes });
  } finally {
    await closeDrivers(drivers);
  }
}

type PlanWithItems = Awaited<ReturnType<typeof buildStopPlan>>;

/** Bring every active guest down at `stop` (per policy) or `shutdown` (ACPI for all). */
export async function stopGuests(ctx: GuestStepContext, mode: StopMode, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  let journalOk = true;
  return runBatch<PlanWithItems>(ctx, deps, {
    title: mode === 'shutdown' ? 'guests shut down' : 'guests stopped',
    async prepare(drivers, t0) {
      let plan = await buildStopPlan(drivers, ctx.settings, mode, ctx.signal, ctx.log);
      let explained: readonly Unreachable[] = [];
      if (plan.unreachable.length > 0 && ctx.dryRun) ({ plan, explained } = await dryRunRescue(plan, ctx, deps));
      else if (plan.unreachable.length > 0) plan = await withRescue(plan, drivers, t0, ctx, mode, deps);
      for (const u of plan.unreachable) if (!explained.includes(u)) ctx.log.error(`connection ${u.uri} does not answer: ${u.error}; its guests are not handled`);
      for (const w of plan.warnings ?? []) ctx.log.warn(w);
      return plan;
    },
    dryRun: (plan, showUri) => formatPlan(plan, showUri),
    async run(plan, observer, showUri) {
      for (const p of plan.guests) if (p.reasons.length) ctx.log.info(`${guestLabel(p.guest, showUri)}: ${p.action}: ${p.reasons.join('; ')}`);
      // An unreadable journal or an unsafe directory never keeps the guests from being handled.
      const rj = await openRunJournal(ctx);
      // Guests whose outcome is not in the journal: the write failed (named in the summary).
      const missed = new Map<string, string>();
      const stopping = stopAll(plan.guests.map((p) => ({ plan: p, driver: plan.items.find((i) => i.guest === p.guest)!.driver })), {
        parallel: ctx.settings.parallel,
        signal: ctx.signal,
        observer,
        onOutcome: async (o) => {
          const p = plan.guests.find((x) => x.guest === o.guest);
          const entry = p && journalEntryFor(o, p.order);
          if (!entry) return;
          try {
            await rj.journal.record(entry);
          } catch (err) {
            missed.set(guestKey(o.guest), `${entry.action}, but not in the journal: ${errorMessage(err)}`);
          }
        },
      });
      // Once the first guests' calls have gone out (they start within this turn of the event loop).
      if (deps.acting) setImmediate(deps.acting);
      const outcomes = await stopping;
      const marked = outcomes.map((o) => {
        const miss = missed.get(guestKey(o.guest));
        return miss ? { ...o, reason: [o.reason, miss].filter(Boolean).join('; ') } : o;
      });
      const lost = marked.filter((o) => missed.has(guestKey(o.guest)) && o.result !== 'saved').map((o) => guestLabel(o.guest, showUri));
      journalOk = reportJournal(rj, ctx, missed.size === 0
        ? 'a new journal holds what this stop did'
        : `start restores the saved images without it${lost.length > 0 ? `, but will not start ${lost.join(', ')}` : ''}`);
      return marked;
    },
    settle: (plan, o) => {
      const note = ctx.dryRun ? undefined : undescribedNote(plan, new Set(plan.items.map((i) => i.driver.uri)).size > 1);
      if (note) ctx.log.error(note);
      return unreachableOutcome(plan, journalOk ? o : { ...o, clean: false });
    },
  });
}

// libvirtd did not answer: plan the guests of its status files on a rescue driver,
// their timeouts shortened by the time the detection took, so stop still ends within TIMEOUT + STOP_MARGIN_MS.
async function withRescue(plan: PlanWithItems, drivers: DomainDriver[], t0: number, ctx: GuestStepContext, mode: StopMode, deps: GuestStepDeps): Promise<PlanWithItems> {
  const { drivers: rescue, lost } = await rescueDrivers(plan.unreachable, ctx.settings, ctx.log, ctx.signal, deps);
  // No rescue driver: what could not be rescued stays unreachable (libvirtd not running with no guest left is not a failure).
  if (rescue.length === 0) return { ...plan, unreachable: lost };
  drivers.push(...rescue);
  const rp = await buildStopPlan(rescue, ctx.settings, mode, ctx.signal);
  cutForRescue(rp.guests, now() - t0);
  return {
    ...plan,
    guests: [...plan.guests, ...rp.guests],
    items: [...plan.items, ...rp.items],
    space: [...plan.space, ...rp.space],
    unreachable: [...lost, ...rp.unreachable],
    warnings: [...(plan.warnings ?? []), ...(rp.warnings ?? [])],
  };
}

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

/**
 * Bring back, at `start`, the guests the last stop handled (ON_BOOT=restore): those the journal
 * names on this run's connections, and every shut-off guest with a saved image the journal does
 * not name (the image is the record); entries of other connections are kept for their own driver.
 */
export async function startGuests(ctx: GuestStepContext, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  const rj = ctx.dryRun ? await peekJournal(ctx) : await openRunJournal(ctx);
  let unlisted = false;
  return runBatch<{ tasks: RestoreTask[]; drivers: DomainDriver[]; listed: Map<string, Guest[]> }>(ctx, deps, {
    title: 'guests brought back',
    async prepare(drivers) {
      const showUri = drivers.length > 1;
      const uris = new Set(drivers.map((d) => d.uri));
      for (const e of rj.entries.filter((x) => !uris.has(x.uri))) ctx.log.info(`journal entry of guest ${guestLabel(e, true)}: not a connection of this run: kept for its own driver`);
      const tasks: RestoreTask[] = rj.entries.filter((e) => uris.has(e.uri)).map((entry) => ({ entry }));
      const known = new Set(rj.entries.map((e) => guestKey(e)));
      // Guests the journal does not name: a saved image is restored all the same (a journal lost,
      // damaged or never written must not make a saved guest be forgotten); qmp guests have no daemon to autostart them.
      // A guest two connections reach (one daemon) is brought back once, through the first.
      const seenIds = new Set(rj.entries.filter((e) => uris.has(e.uri)).map((e) => e.id.toLowerCase()));
      // Each connection's listing, also what the restores go by (no lookup per guest); listed at once.
      const listings = await Promise.allSettled(drivers.map((d) => d.listGuests({ signal: ctx.signal })));
      const listed = new Map<string, Guest[]>();
      for (const [i, d] of drivers.entries()) {
        const r = listings[i] as PromiseSettledResult<Guest[]>;
        if (r.status === 'rejected') {
          unlisted = true;
          ctx.log.error(`connection ${d.uri}: cannot list guests: ${errorMessage(r.reason)}; saved images the journal does not name are not restored`);
          continue;
        }
        listed.set(d.uri, r.value);
        for (const g of r.value) {
          if (g.state !== 'shutoff' || known.has(guestKey(g))) continue;
          if (d.kind === 'libvirt' && seenIds.has(g.id.toLowerCase())) continue;
          if (d.kind === 'libvirt') seenIds.add(g.id.toLowerCase());
          const source = g.hasSavedImage ? 'not in the journal, has a saved image' : d.kind === 'qmp' && g.autostart ? 'autostart' : undefined;
          if (!source) continue;
          if (g.hasSavedImage) ctx.log.notice(`${guestLabel(g, showUri)}: ${source}: ${restoresImage(g, d, ctx.settings) ? 'restoring it' : 'ON_BOOT=ignore: left as it is'}`);
          const entry: JournalEntry = { uri: g.uri, id: g.id, name: g.name, action: g.hasSavedImage ? 'saved' : 'shutdown', stateBefore: 'running', order: g.policy.order ?? 0, at: '' };
          tasks.push({ entry, source });
        }
      }
      return { tasks, drivers, listed };
    },
    dryRun: ({ tasks }, showUri) => (tasks.length === 0 ? 'no guests to bring back' : tasks
      .sort((a, b) => a.entry.order - b.entry.order)
      .map((t) => `order ${t.entry.order}: ${guestLabel(t.entry, showUri)}: ${t.entry.action === 'saved' ? 'restore' : 'start'}${t.entry.stateBefore === 'paused' ? ' (paused)' : ''}${t.source ? ` (${t.source})` : ''}`)
      .join('\n')),
    run: ({ tasks, drivers, listed }, observer) => restoreAll(tasks, {
      drivers,
      listed,
      ...(deps.daemonsReady ? { ready: deps.daemonsReady } : {}),
      journal: rj.journal,
      timeout: ctx.settings.timeout,
      onBoot: ctx.settings.onBoot,
      startDelay: ctx.settings.startDelay,
      parallel: ctx.settings.parallel,
      signal: ctx.signal,
      observer,
      warn: (m) => ctx.log.warn(m),
    }),
    settle: (_p, o) => {
      if (ctx.dryRun) return o;
      const journalOk = reportJournal(rj, ctx, 'every guest with a saved image was restored all the same; guests it named that have none are not started');
      return journalOk && !unlisted ? o : { ...o, clean: false };
    },
  });
}

// Whether start restores a guest's image by the settings and its own policy (as restore.ts decides: qmp autostart always).
function restoresImage(g: Guest, d: DomainDriver, settings: Settings): boolean {
  return (d.kind === 'qmp' && g.autostart) || (g.policy.onBoot ?? settings.onBoot) !== 'ignore';
}

function guestKey(g: Pick<Guest, 'uri' | 'id'>): string {
  return `${g.uri}\u0000${g.id}`;
}

/** The journal as a guest step uses it: read once, changed entry by entry, each failure kept to be reported. */
interface RunJournal {
  path: string;
  entries: JournalEntry[];
  journal: Journal;
  /** What went wrong with it (unreadable, damaged, its directory refused, a write that failed), once each. */
  problems: Set<string>;
}

// Make the state directory safe, read the journal and open it for changes; never throws.
async function openRunJournal(ctx: GuestStepContext): Promise<RunJournal> {
  const { stateDir } = ctx.settings;
  const path = journalPath(stateDir);
  const problems = new Set<string>();
  // The journal's directory, and the qmp save directory (no daemon start makes it at boot).
  const refused = await secureOwnDirs([stateDir, ...(ctx.settings.driver === 'qmp' ? [ctx.settings.qemuSaveDir] : [])], ctx.log);
  for (const d of refused) problems.add(`${d} refused (see above)`);
  let entries: JournalEntry[] = [];
  if (!refused.includes(stateDir)) {
    const read = await readJournal(stateDir);
    if (read.damaged) {
      ctx.log.error(read.damaged);
      problems.add(read.damaged);
    }
    entries = read.entries;
  }
  const inner = openJournal(stateDir, entries);
  const watch = (p: Promise<void>): Promise<void> => p.catch((err: unknown) => {
    problems.add(errorMessage(err));
    throw err;
  });
  return {
    path,
    entries,
    problems,
    journal: { entries: inner.entries, record: (e) => watch(inner.record(e)), clear: (uri, id) => watch(inner.clear(uri, id)) },
  };
}

// --dry-run: read the journal as it is (a damaged one left in place), fix nothing, write nothing.
async function peekJournal(ctx: GuestStepContext): Promise<RunJournal> {
  const read = await readJournal(ctx.settings.stateDir, { keepDamaged: true });
  if (read.damaged) ctx.log.error(read.damaged);
  const journal: Journal = { entries: () => read.entries, record: async () => undefined, clear: async () => undefined };
  return { path: journalPath(ctx.settings.stateDir), entries: read.entries, journal, problems: new Set() };
}

// Journal failures are errors at every verbosity; true when there were none.
function reportJournal(rj: RunJournal, ctx: GuestStepContext, consequence: string): boolean {
  if (rj.problems.size === 0) return true;
  ctx.log.error(`journal ${rj.path} failed: ${[...rj.problems].join('; ')}; ${consequence}`);
  return false;
}

/** guests_reboot: every running guest at once, each waited for until it runs again or its timeout. */
export async function rebootGuests(ctx: GuestStepContext, deps: GuestStepDeps = {}): Promise<GuestStepOutcome> {
  return runBatch<{ items: { guest: Guest; driver: DomainDriver }[]; unreachable: boolean }>(ctx, deps, {
    title: 'guests rebooted',
    async prepare(drivers) {
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
      return { items: onePerGuest(items, drivers, ctx.log), unreachable };
    },
    dryRun: ({ items }, showUri) => items.map((i) => `${guestLabel(i.guest, showUri)}: reboot (timeout ${i.guest.policy.timeout ?? ctx.settings.timeout} s)`).join('\n') || 'no running guests',
    run: ({ items }, observer) => rebootAll(items, { timeout: ctx.settings.timeout, parallel: ctx.settings.parallel, signal: ctx.signal, observer }),
    // A connection that could not be listed makes the run unclean (a dry run only logs it).
    settle: ({ unreachable }, o) => (unreachable && !ctx.dryRun ? { ...o, clean: false } : o),
  });
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
