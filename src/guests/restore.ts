// Bringing guests back at start (ON_BOOT=restore): exactly those the journal
// names, ascending order groups, START_DELAY between launches; saved ones
// restored, shut-down (and destroyed) ones started, paused ones paused again.
// An entry is cleared only once its guest is back as it was. What each guest
// is (state, saved image, policy) comes from one listing per connection taken
// right before its order group, not from a lookup per guest.
import type { BootAction } from '../config/settings.js';
import type { DomainDriver, Guest, GuestState } from '../domain/types.js';
import { isDomainError } from '../domain/errors.js';
import { errorMessage } from '../util/error-message.js';
import { deadline, now, sleep } from '../util/deadline.js';
import { runInGroups } from './groups.js';
import type { Journal, JournalEntry } from './journal.js';
import type { GuestObserver } from './observer.js';
import type { GuestAction, GuestOutcome } from './outcome.js';

/** How often a start that failed for a passing lack of a resource is tried, in all (within the guest's timeout). */
export const START_ATTEMPTS = 3;
/** The pause before trying such a start again. */
export const START_RETRY_MS = 1000;

/** Whether a failed start names a resource that was unavailable for a moment (EAGAIN: "Resource temporarily unavailable"). */
export function isTransient(err: unknown): boolean {
  return /temporarily unavailable|try again/i.test(errorMessage(err));
}

/** One guest to bring back: its journal entry (or a stand-in for a guest found another way). */
export interface RestoreTask {
  entry: JournalEntry;
  /** Why it is on the list when not from the journal. */
  source?: string;
}

/** What a restore batch runs with. */
export interface RestoreOptions {
  drivers: readonly DomainDriver[];
  journal: Journal;
  /** The settings' defaults for guests without their own policy. */
  timeout: number;
  onBoot: BootAction;
  startDelay: number;
  parallel: number;
  signal: AbortSignal;
  observer: GuestObserver;
  /** Facts the admin must see at any verbosity (a journal entry dropped). */
  warn?: (msg: string) => void;
  /**
   * Each connection's guests as listed just before (start lists them to find
   * saved images the journal does not name): the first order group is brought
   * back from these, each later one from a listing taken right before it. A
   * guest missing from its listing, or not fully described there, and every
   * guest of a connection that could not be listed, is looked up on its own.
   */
  listed?: ReadonlyMap<string, readonly Guest[]>;
  /**
   * Resolves once what the guests need is up (virtlockd and virtlogd past
   * their settling time): undefined, or why not; then no guest is started and
   * every entry is kept.
   */
  ready?: Promise<string | undefined>;
}

/** How long one connection's listing before an order group may take before its guests are looked up one by one. */
export const GROUP_LISTING_MS = 30_000;

/** Bring the guests back, group by group (ascending); never throws for one guest. */
export async function restoreAll(tasks: readonly RestoreTask[], opts: RestoreOptions): Promise<GuestOutcome[]> {
  const listings = new Map<string, readonly Guest[]>(opts.listed ?? []);
  let firstGroup = true;
  // Before every order group but the first (whose listing was just taken): list again the connections it restores on.
  const relist = async (order: number): Promise<void> => {
    if (firstGroup) {
      firstGroup = false;
      return;
    }
    const uris = new Set(tasks.filter((t) => t.entry.order === order).map((t) => t.entry.uri));
    await Promise.all(opts.drivers.filter((d) => uris.has(d.uri)).map(async (d) => {
      const dl = deadline(GROUP_LISTING_MS, opts.signal);
      try {
        listings.set(d.uri, await d.listGuests({ signal: dl.signal }));
      } catch {
        listings.delete(d.uri); // its guests are looked up one by one (which says what fails)
      } finally {
        dl.clear();
      }
    }));
  };
  const skip = (task: RestoreTask, reason: string): GuestOutcome => {
    const o = outcomeOf(stubGuest(task.entry), 'start', 'skipped', reason, 0);
    opts.observer.end(o);
    return o;
  };
  const notReady = await opts.ready;
  if (notReady !== undefined) return tasks.map((task) => skip(task, `not started: ${notReady}; left in the journal`));
  return runInGroups(tasks.map((task) => ({
    order: task.entry.order,
    timeoutMs: opts.timeout * 1000,
    run: () => restoreGuest(task, { ...opts, listed: listings }),
    skip: (reason: string) => skip(task, reason),
  })), {
    direction: 'asc',
    parallel: opts.parallel,
    signal: opts.signal,
    gapMs: opts.startDelay * 1000,
    onGroup: (order, count) => opts.observer.note(`order group ${order}: ${count} guest${count === 1 ? '' : 's'}`),
    beforeGroup: opts.listed ? relist : undefined,
  });
}

/** Bring one guest back as the journal says; clears its entry once it is back (or was already). */
export async function restoreGuest(task: RestoreTask, opts: RestoreOptions): Promise<GuestOutcome> {
  const { entry } = task;
  const started = now();
  const driver = opts.drivers.find((d) => d.uri === entry.uri);
  const finish = async (guest: Guest, action: GuestAction, result: GuestOutcome['result'], reason: string, clear: boolean): Promise<GuestOutcome> => {
    if (clear) {
      try {
        await opts.journal.clear(entry.uri, entry.id);
      } catch (err) {
        reason = [reason, `journal not updated: ${errorMessage(err)}`].filter(Boolean).join('; ');
      }
    }
    const o = outcomeOf(guest, action, result, reason, now() - started, entry.stateBefore);
    opts.observer.end(o);
    return o;
  };
  const stub = stubGuest(entry);
  if (!driver) return finish(stub, 'start', 'failed', `connection ${entry.uri} is not configured (URIS): left in the journal`, false);
  const gone = (): Promise<GuestOutcome> => {
    opts.warn?.(`journal entry of guest '${entry.name}' (${entry.id}) on ${entry.uri}: no such guest any more: entry dropped`);
    return finish(stub, 'start', 'skipped', `no longer defined on ${entry.uri}: entry dropped`, true);
  };
  const lookUp = async (signal: AbortSignal): Promise<Guest> => {
    const look = deadline(30_000, signal);
    try {
      return await driver.getGuest(entry.id, { signal: look.signal });
    } finally {
      look.clear();
    }
  };
  const listed = listedGuest(opts.listed?.get(entry.uri), driver, entry.id);
  let guest: Guest;
  if (listed) guest = listed;
  else {
    try {
      guest = await lookUp(opts.signal);
    } catch (err) {
      if (isDomainError(err, 'not-found')) return gone();
      return finish(stub, 'start', 'failed', `cannot look it up: ${errorMessage(err)}`, false);
    }
  }
  const action = guest.hasSavedImage ? 'restore' : 'start';
  opts.observer.begin(guest, action);
  // libvirtd boots its autostart guests whatever ON_BOOT says; a qmp guest's `autostart` is the same promise.
  const autostarts = driver.kind === 'qmp' && guest.autostart;
  if (guest.policy.onBoot === 'ignore' && !autostarts) return finish(guest, action, 'skipped', 'policy on_boot=ignore: left as it is', true);
  if (!guest.policy.onBoot && opts.onBoot === 'ignore' && !autostarts) return finish(guest, action, 'skipped', 'ON_BOOT=ignore: left as it is, kept in the journal', false);
  const alreadyBack = (g: Guest): Promise<GuestOutcome> | undefined => (g.state === 'running' || g.state === 'paused' || g.state === 'suspended'
    ? finish(g, action, 'skipped', `already ${g.state} (brought back by libvirt itself, e.g. autostart): left alone`, true)
    : undefined);
  const back = alreadyBack(guest);
  if (back) return back;
  if (guest.state !== 'shutoff') return finish(guest, action, 'failed', `in state ${guest.stateDetail}: not started, left in the journal`, false);
  const notes: string[] = [];
  if (task.source) notes.push(task.source);
  if (entry.action === 'saved' && !guest.hasSavedImage) notes.push('its saved image is gone: started afresh');
  if (entry.action === 'destroyed') notes.push('was destroyed at stop: started afresh');
  const timeout = (guest.policy.timeout ?? opts.timeout) * 1000;
  const dl = deadline(timeout, opts.signal);
  const paused = entry.stateBefore === 'paused';
  try {
    // A paused guest is asked to come back paused; any other comes back as its image says, and is resumed
    // below if that was paused (one state query fewer per guest than asking the driver to make sure).
    let after: GuestState | void;
    for (let attempt = 1; ; attempt++) {
      try {
        after = await driver.start(guest.id, paused ? { signal: dl.signal, paused } : { signal: dl.signal });
        break;
      } catch (err) {
        // A resource the host lacks for a moment (many guests coming back at once) is worth another try.
        if (attempt >= START_ATTEMPTS || dl.signal.aborted || !isTransient(err)) throw err;
        if (attempt === 1) notes.push(`${action} failed (${errorMessage(err)}): tried again`);
        await sleep(START_RETRY_MS, dl.signal);
      }
    }
    // The state the start read along with it, when it is one the wait would end on; else the wait asks.
    let state = after === 'running' || after === 'paused' ? after : await driver.waitForState(guest.id, ['running', 'paused'], { signal: dl.signal });
    if (state === 'paused' && !paused && driver.resume) {
      await driver.resume(guest.id, { signal: dl.signal });
      state = await driver.waitForState(guest.id, ['running'], { signal: dl.signal });
      notes.push('came back paused: resumed');
    }
    if (state !== entry.stateBefore) {
      return finish(guest, action, 'failed', [...notes, `came back ${state}, not ${entry.stateBefore}: left in the journal`].join('; '), false);
    }
    if (paused) notes.push('paused, as it was');
    return finish(guest, action, action === 'restore' ? 'restored' : 'started', notes.join('; '), true);
  } catch (err) {
    // The listing is older than a lookup would be: a guest started meanwhile (libvirtd's autostart) or undefined
    // meanwhile is refused by the start; then it is looked up, and treated as a lookup before the start would have.
    if (listed && !dl.signal.aborted && (isDomainError(err, 'not-found') || ALREADY_ACTIVE.test(errorMessage(err)))) {
      let fresh: Guest | undefined;
      try {
        fresh = await lookUp(dl.signal);
      } catch (again) {
        if (isDomainError(again, 'not-found')) return gone();
      }
      const left = fresh && alreadyBack(fresh);
      if (left) return left;
    }
    const why = dl.signal.aborted && !opts.signal.aborted ? `not back within ${timeout / 1000} s` : errorMessage(err);
    return finish(guest, action, 'failed', [...notes, `${why}: left in the journal`].join('; '), false);
  } finally {
    dl.clear();
  }
}

/** What a start refused because the guest runs says (libvirt: "domain is already active"; qmp: "it is already running"). */
const ALREADY_ACTIVE = /already (active|running)/i;

// The guest of a listing with this id (a libvirt UUID in any case), when the listing described it in full.
function listedGuest(guests: readonly Guest[] | undefined, driver: DomainDriver, id: string): Guest | undefined {
  const same = (g: Guest): boolean => g.id === id || (driver.kind === 'libvirt' && g.id.toLowerCase() === id.toLowerCase());
  const g = guests?.find(same);
  return g && !g.undescribed ? g : undefined;
}

function stubGuest(e: JournalEntry): Guest {
  return {
    id: e.id,
    name: e.name,
    uri: e.uri,
    state: 'other',
    stateDetail: 'unknown',
    memoryKiB: 0,
    persistent: true,
    autostart: false,
    hasSavedImage: false,
    policy: {},
    saveBlockers: [],
  };
}

function outcomeOf(guest: Guest, action: GuestAction, result: GuestOutcome['result'], reason: string, ms: number, stateBefore = guest.state): GuestOutcome {
  return { guest, action, result, reason, ms, stateBefore };
}
