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
  return o.result === 'failed' || (o.result === 'destroyed' && !o.plannedDestroy);
}
