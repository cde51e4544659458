// What the guest steps tell the report while they run: who starts, each step,
// save progress, and each guest's outcome. The report draws it (live lines on
// a terminal, plain lines otherwise, syslog).
import type { Guest } from '../domain/types.js';
import type { GuestOutcome } from './outcome.js';

/** Receives the events of a batch of guests; every method must return at once. */
export interface GuestObserver {
  /** A guest's step began (`action`: save, shutdown, start...). */
  begin(guest: Guest, action: string): void;
  /** A new step on the ladder, in words (`save failed: ...; shutting down`). */
  step(guest: Guest, action: string, text: string): void;
  /** Save progress, 0..1. */
  progress(guest: Guest, fraction: number): void;
  /** The guest is done. */
  end(outcome: GuestOutcome): void;
  /** A fact about the batch (an order group starts, an interruption...). */
  note(text: string): void;
}

/** An observer that ignores everything. */
export const SILENT_OBSERVER: GuestObserver = {
  begin: () => undefined,
  step: () => undefined,
  progress: () => undefined,
  end: () => undefined,
  note: () => undefined,
};
