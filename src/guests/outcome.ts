// What happened to one guest: plain data, so one guest's failure never stops
// the others, and the summary and the exit code come from a list of these.
import type { Guest, GuestState } from '../domain/types.js';

/** The end state of one guest's step. */
export type GuestResult = 'saved' | 'shutdown' | 'destroyed' | 'failed' | 'rebooted' | 'started' | 'restored' | 'skipped';

/** The outcome of one guest's step. */
export interface GuestOutcome {
  guest: Guest;
  /** What was tried: `save`, `shutdown`, `destroy`, `start`, `restore`, `reboot`. */
  action: string;
  result: GuestResult;
  /** Why, in words (empty when it simply went as planned). */
  reason: string;
  /** Milliseconds the guest's step took. */
  ms: number;
  /** The guest's state before the step. */
  stateBefore: GuestState;
  /** Destroyed as planned (ON_SHUTDOWN=destroy), not forced by the deadline. */
  plannedDestroy?: boolean;
}

/** True when the outcome counts against a clean run: a forced destroy or a failure. */
export function isBadOutcome(o: GuestOutcome): boolean {
  return o.result === 'failed' || (o.result === 'destroyed' && !o.plannedDestroy) || o.guest.problem !== undefined;
}

/** How a batch of guests went: the guests destroyed at the deadline, the failed ones, and whether the run was clean (neither). */
export interface BatchVerdict {
  clean: boolean;
  destroyed: string[];
  failed: string[];
}

/** Judge a batch: clean only when no guest was destroyed at its deadline and none failed. */
export function judgeOutcomes(outcomes: readonly GuestOutcome[]): BatchVerdict {
  const destroyed = outcomes.filter((o) => o.result === 'destroyed' && !o.plannedDestroy).map((o) => o.guest.name);
  // A guest handled despite a fault around it (Guest.problem) still makes the run fail.
  const failed = outcomes.filter((o) => o.result === 'failed' || o.guest.problem !== undefined).map((o) => o.guest.name);
  return { clean: destroyed.length === 0 && failed.length === 0, destroyed, failed };
}
