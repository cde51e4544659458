// What stop's guest policy decides from data, outside the ladder: what the
// journal records of an outcome, and how much of their timeout rescued guests
// keep once finding libvirtd hung has cost time.
import type { JournalEntry } from './journal.js';
import type { GuestOutcome } from './outcome.js';
import type { GuestPlan } from './plan.js';

/** The least time a rescued guest gets for a clean power-off, whatever the detection of the hung daemon took. */
export const RESCUE_MIN_TIMEOUT_S = 5;

/** The journal entry of a stop outcome: a persistent guest that ran, was paused or asleep (S3: woken at stop, it comes back running) and is now down (saved, shut down, destroyed); undefined for any other. */
export function journalEntryFor(outcome: GuestOutcome, order: number, at: Date = new Date()): JournalEntry | undefined {
  const { guest } = outcome;
  if (!guest.persistent) return undefined;
  const action = outcome.result === 'saved' ? 'saved' : outcome.result === 'shutdown' ? 'shutdown' : outcome.result === 'destroyed' ? 'destroyed' : undefined;
  const before = outcome.stateBefore === 'suspended' ? 'running' : outcome.stateBefore;
  if (!action || (before !== 'running' && before !== 'paused')) return undefined;
  return { uri: guest.uri, id: guest.id, name: guest.name, action, stateBefore: before, order, at: at.toISOString() };
}

/** Shorten rescued guests' timeouts by the seconds the detection took (never below RESCUE_MIN_TIMEOUT_S), so stop still ends within its bound; says so in each guest's reasons. */
export function cutForRescue(guests: readonly GuestPlan[], spentMs: number): void {
  const spent = spentMs / 1000;
  for (const g of guests) {
    const t = Math.max(RESCUE_MIN_TIMEOUT_S, Math.floor(g.timeout - spent));
    if (t !== g.timeout) g.reasons.push(`timeout ${g.timeout} s shortened to ${t} s: ${spent.toFixed(0)} s went to finding libvirtd hung`);
    g.timeout = t;
  }
}
