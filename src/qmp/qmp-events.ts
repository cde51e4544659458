// QMP events and event listeners: a listener is a FIFO queue of the events it
// was subscribed to, filled by the client's reader loop from the moment it is
// created, so subscribing before the command that causes an event never misses it.
import { InterruptedError, type DomainError } from '../domain/errors.js';
import { abortError } from './abort.js';

/** One QMP event as the server sent it. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** The server's timestamp in ms since the epoch, when it sent one. */
  timestamp?: number;
  /** performance.now() when we read it. */
  seenAt: number;
}

/** A subscription to some events; await next()/waitFor(), then unsubscribe(). */
export interface QmpEventListener {
  /** The names it hears (`*` for all). */
  readonly names: readonly string[];
  /** The next event heard (queued ones first); rejects when the signal aborts or the connection ends. */
  next(opts: { signal: AbortSignal }): Promise<QmpEvent>;
  /** The first event (queued ones first) for which `match` is true; others are dropped. */
  waitFor(match: (e: QmpEvent) => boolean, opts: { signal: AbortSignal }): Promise<QmpEvent>;
  /** Events heard and not yet taken. */
  readonly queued: readonly QmpEvent[];
  /** Stop hearing events; waiting calls fail with InterruptedError. */
  unsubscribe(): void;
}

interface Waiter {
  resolve: (e: QmpEvent) => void;
  reject: (err: unknown) => void;
}

/** The listener implementation the client feeds. */
export class EventQueue implements QmpEventListener {
  readonly names: readonly string[];
  readonly #queue: QmpEvent[] = [];
  #waiter: Waiter | undefined;
  #ended: DomainError | undefined;
  readonly #onUnsubscribe: (l: EventQueue) => void;

  constructor(names: readonly string[], onUnsubscribe: (l: EventQueue) => void) {
    this.names = names;
    this.#onUnsubscribe = onUnsubscribe;
  }

  get queued(): readonly QmpEvent[] {
    return this.#queue;
  }

  /** Whether this listener wants `name`. */
  hears(name: string): boolean {
    return this.names.includes('*') || this.names.includes(name);
  }

  /** Feed one event (from the reader loop). */
  push(e: QmpEvent): void {
    if (this.#ended) return;
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      w.resolve(e);
    } else {
      this.#queue.push(e);
    }
  }

  /** The connection ended (or we unsubscribed): wake the waiter with `why`. */
  end(why: DomainError): void {
    if (this.#ended) return;
    this.#ended = why;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(why);
  }

  next(opts: { signal: AbortSignal }): Promise<QmpEvent> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#ended) return Promise.reject(this.#ended);
    const what = `waiting for QMP event ${this.names.join('|')}`;
    if (opts.signal.aborted) return Promise.reject(abortError(opts.signal, what));
    if (this.#waiter) return Promise.reject(new InterruptedError(`${what}: another wait is in progress on this listener`));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiter = undefined;
        reject(abortError(opts.signal, what));
      };
      opts.signal.addEventListener('abort', onAbort, { once: true });
      this.#waiter = {
        resolve: (e) => {
          opts.signal.removeEventListener('abort', onAbort);
          resolve(e);
        },
        reject: (err) => {
          opts.signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
    });
  }

  async waitFor(match: (e: QmpEvent) => boolean, opts: { signal: AbortSignal }): Promise<QmpEvent> {
    for (;;) {
      const e = await this.next(opts);
      if (match(e)) return e;
    }
  }

  unsubscribe(): void {
    this.#onUnsubscribe(this);
    this.end(new InterruptedError(`QMP event listener for ${this.names.join('|')} unsubscribed`));
  }
}

/** Parse the event fields of a message already known to have a string `event`. */
export function toQmpEvent(msg: Record<string, unknown>, seenAt: number): QmpEvent {
  const data = msg['data'];
  const e: QmpEvent = {
    event: String(msg['event']),
    data: data !== null && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, unknown>) : {},
    seenAt,
  };
  const ts = msg['timestamp'];
  if (ts !== null && typeof ts === 'object') {
    const { seconds, microseconds } = ts as { seconds?: unknown; microseconds?: unknown };
    if (typeof seconds === 'number' && typeof microseconds === 'number') e.timestamp = seconds * 1000 + microseconds / 1000;
  }
  return e;
}
