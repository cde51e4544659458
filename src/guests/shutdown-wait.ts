// Waiting for a guest to go off after an ACPI shutdown request. The request
// is repeated while time is left: a press can be lost (a guest still booting
// has no power-button driver yet), and a request can fail while its daemon or
// monitor is busy. One lost press must never end in a destroy at the deadline.
import { isDomainError } from '../domain/errors.js';
import type { DomainDriver, GuestState } from '../domain/types.js';
import { deadline, sleep } from '../util/deadline.js';

/** How long to wait before asking again when a wait for the guest to go off failed (the daemon hiccuped). */
export const WAIT_RETRY_MS = 1000;
/** How long after a failed shutdown request it is sent again. */
export const SHUTDOWN_RETRY_MS = 5000;
/** How long a guest may take to go off after a press before the button is pressed again. */
export const SHUTDOWN_REPEAT_MS = 30_000;

/** Told about the requests while a shutdown goes on. */
export interface ShutdownNotes {
  /** A shutdown request failed (it is sent again after SHUTDOWN_RETRY_MS). */
  failed(err: unknown): void;
  /** The guest was still up SHUTDOWN_REPEAT_MS after a press: pressing again. */
  repeated(): void;
}

/** Wait until the guest is off; a failing wait is retried until the signal aborts, so a daemon's hiccup never turns into a destroy before the deadline. `stateNow`: what the request read along with it, for the first wait. */
export async function waitOff(driver: DomainDriver, id: string, signal: AbortSignal, stateNow?: GuestState | void): Promise<void> {
  let known = stateNow ?? undefined;
  for (;;) {
    try {
      await driver.waitForState(id, ['shutoff'], known === undefined ? { signal } : { signal, stateNow: known });
      return;
    } catch (err) {
      if (signal.aborted) throw err;
      if (isDomainError(err, 'not-found')) return;
      known = undefined;
      await sleep(WAIT_RETRY_MS, signal);
    }
  }
}

/** Request a shutdown and wait until the guest is off, requesting again while it is not; `gone` when the guest vanished. Rejects only when `signal` aborts. */
export async function shutdownUntilOff(driver: DomainDriver, id: string, signal: AbortSignal, notes: ShutdownNotes): Promise<'off' | 'gone'> {
  let pressed = false;
  for (;;) {
    let waitMs = SHUTDOWN_REPEAT_MS;
    if (pressed) notes.repeated();
    pressed = false;
    let after: GuestState | void = undefined;
    try {
      after = await driver.shutdown(id, { signal });
      pressed = true;
    } catch (err) {
      if (signal.aborted) throw err;
      if (isDomainError(err, 'not-found')) return 'gone';
      notes.failed(err);
      waitMs = SHUTDOWN_RETRY_MS;
    }
    const wait = deadline(waitMs, signal);
    try {
      await waitOff(driver, id, wait.signal, after);
      return 'off';
    } catch (err) {
      if (signal.aborted) throw err;
    } finally {
      wait.clear();
    }
  }
}
