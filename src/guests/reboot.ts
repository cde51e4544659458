// guests_reboot: every running guest at once (PARALLEL), each waited for until
// it runs again (the driver's reboot resolves then) or its timeout.
import type { DomainDriver, Guest } from '../domain/types.js';
import { errorMessage } from '../util/error-message.js';
import { deadline, now } from '../util/deadline.js';
import { runInGroups } from './groups.js';
import type { GuestObserver } from './observer.js';
import type { GuestOutcome } from './outcome.js';

/** What a reboot batch runs with. */
export interface RebootOptions {
  /** Seconds per guest unless its policy says otherwise. */
  timeout: number;
  parallel: number;
  signal: AbortSignal;
  observer: GuestObserver;
}

/** Reboot every running guest given; paused and inactive ones are skipped. */
export async function rebootAll(items: readonly { guest: Guest; driver: DomainDriver }[], opts: RebootOptions): Promise<GuestOutcome[]> {
  return runInGroups(items.map(({ guest, driver }) => ({
    order: 0,
    timeoutMs: (guest.policy.timeout ?? opts.timeout) * 1000,
    run: () => rebootGuest(guest, driver, opts),
    skip: (reason: string) => {
      const o: GuestOutcome = { guest, action: 'reboot', result: 'skipped', reason, ms: 0, stateBefore: guest.state };
      opts.observer.end(o);
      return o;
    },
  })), { direction: 'asc', parallel: opts.parallel, signal: opts.signal });
}

async function rebootGuest(guest: Guest, driver: DomainDriver, opts: RebootOptions): Promise<GuestOutcome> {
  const started = now();
  const end = (result: GuestOutcome['result'], reason: string): GuestOutcome => {
    const o: GuestOutcome = { guest, action: 'reboot', result, reason, ms: now() - started, stateBefore: guest.state };
    opts.observer.end(o);
    return o;
  };
  if (guest.state !== 'running') return end('skipped', `${guest.stateDetail}: only running guests are rebooted`);
  opts.observer.begin(guest, 'reboot');
  const seconds = guest.policy.timeout ?? opts.timeout;
  const dl = deadline(seconds * 1000, opts.signal);
  try {
    await driver.reboot(guest.id, { signal: dl.signal });
    return end('rebooted', '');
  } catch (err) {
    if (opts.signal.aborted) return end('failed', 'interrupted');
    if (dl.signal.aborted) return end('failed', `did not run again within ${seconds} s`);
    return end('failed', errorMessage(err));
  } finally {
    dl.clear();
  }
}
