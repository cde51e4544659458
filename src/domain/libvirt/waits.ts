// Waiting for a guest's state without fixed sleeps: the lifecycle event
// stream wakes the wait (a "Stopped" line ends a wait for shutoff at once);
// a slow safety poll covers a stream that is alive but silent (hung libvirtd),
// and a short poll takes over when the stream is dead.
import { InterruptedError } from '../errors.js';
import type { GuestState } from '../types.js';
import type { EventStream, StreamEvent } from './events.js';

/** How waits ended, for tests and logs: woken by an event, by a poll, or already there. */
export interface WaitStats {
  byEvent: number;
  byPoll: number;
  immediate: number;
}

/** What a wait needs from the driver. */
export interface WaitDeps {
  stream: EventStream;
  /** The guest's current state (a virsh call). */
  query: (signal: AbortSignal) => Promise<GuestState>;
  /** Poll interval while the stream is dead (ms). */
  pollMs: number;
  /** Poll interval while the stream is alive, in case it is silent (ms). */
  safetyPollMs: number;
  stats: WaitStats;
}

/** The state an event says for sure, if any (a "Stopped" guest is shut off). */
export function stateFromEvent(ev: Pick<StreamEvent, 'event'>): GuestState | undefined {
  return ev.event === 'Stopped' ? 'shutoff' : undefined;
}

/** Resolve with the guest's state once it is one of `states`; `matches` picks the guest's events; `stateNow`, read by the caller after the stream was started, stands for the first query. */
export async function waitForGuestState(
  deps: WaitDeps,
  matches: (ev: StreamEvent) => boolean,
  states: readonly GuestState[],
  signal: AbortSignal,
  stateNow?: GuestState,
): Promise<GuestState> {
  deps.stream.ensure();
  let eventState: GuestState | undefined;
  // What woke the wait while it was busy: an event of the guest, or the stream's death.
  let pending: 'event' | 'poll' | undefined;
  let wake: ((why: 'event' | 'poll') => void) | undefined;
  const poke = (why: 'event' | 'poll'): void => {
    if (pending !== 'event') pending = why;
    wake?.(why);
  };
  // Waiting for shutoff, only a Stopped event can end the wait: any other event of
  // the guest (Shutdown, Suspended...) would cost a state query for nothing.
  const offOnly = states.length === 1 && states[0] === 'shutoff';
  const unsub = deps.stream.subscribe((ev) => {
    if (!matches(ev)) return;
    const said = stateFromEvent(ev);
    if (offOnly && said === undefined) return;
    eventState = said ?? eventState;
    poke('event');
  });
  const unsubDeath = deps.stream.onDeath(() => poke('poll'));
  let cause: 'immediate' | 'event' | 'poll' = 'immediate';
  let known = stateNow;
  try {
    for (;;) {
      if (signal.aborted) throw interrupted(signal);
      if (eventState !== undefined && states.includes(eventState)) {
        deps.stats.byEvent++;
        return eventState;
      }
      eventState = undefined;
      pending = undefined;
      const state = known ?? (await deps.query(signal));
      known = undefined;
      if (states.includes(state)) {
        if (cause === 'event') deps.stats.byEvent++;
        else if (cause === 'poll') deps.stats.byPoll++;
        else deps.stats.immediate++;
        return state;
      }
      if (pending) {
        cause = pending;
        continue;
      }
      deps.stream.ensure();
      const ms = deps.stream.alive ? deps.safetyPollMs : deps.pollMs;
      cause = await new Promise<'event' | 'poll'>((resolve, reject) => {
        const t = setTimeout(() => done('poll'), ms);
        const onAbort = (): void => {
          cleanup();
          reject(interrupted(signal));
        };
        const cleanup = (): void => {
          clearTimeout(t);
          wake = undefined;
          signal.removeEventListener('abort', onAbort);
        };
        function done(why: 'event' | 'poll'): void {
          cleanup();
          resolve(why);
        }
        wake = done;
        signal.addEventListener('abort', onAbort, { once: true });
        if (signal.aborted) onAbort();
      });
    }
  } finally {
    unsub();
    unsubDeath();
  }
}

function interrupted(signal: AbortSignal): InterruptedError {
  return new InterruptedError('wait for the guest state was cut off', { cause: signal.reason });
}
