// What happened to one guest: plain data, so one guest's failure never stops
// the others, and the summary and the exit code come from a list of these.
import type { Guest, GuestState } from '../domain/types.js';

/** The end state of one guest's step. */
export type GuestResult = 'saved' | 'shutdown' | 'destroyed' | 'failed' | 'rebooted' | 'started' | 'restored' | 'skipped';

/**
 * The path a guest took down the stop ladder: the first step, and each one it
 * fell back to (`save->shutdown`: the save failed, the guest was shut down;
 * `...->destroy`: destroyed at its deadline).
 */
export type StopAction = 'save' | 'shutdown' | 'destroy' | 'save->shutdown' | 'save->destroy' | 'shutdown->destroy' | 'save->shutdown->destroy';

/** What a guest step tried: a path of the stop ladder, or a start, restore or reboot. */
export type GuestAction = StopAction | 'start' | 'restore' | 'reboot';

/** The ladder's path once a save fell back to a shutdown. */
export function fellBack(action: StopAction): StopAction {
  return action === 'save' ? 'save->shutdown' : action;
}

/** The ladder's path once the guest was destroyed at its deadline. */
export function destroyedAfter(action: StopAction): StopAction {
  switch (action) {
    case 'save':
      return 'save->destroy';
    case 'shutdown':
      return 'shutdown->destroy';
    case 'save->shutdown':
      return 'save->shutdown->destroy';
    default:
      return action;
  }
}

/** The outcome of one guest's step. */
export interface GuestOutcome {
  guest: Guest;
  /** What was tried. */
  action: GuestAction;
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
