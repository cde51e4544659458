// Shared QMP connections, one per guest: QEMU's monitor serves one client at a
// time (a second one waits without a greeting), so concurrent operations on a
// guest share one connection. It is closed when its last user releases it,
// and every one is closed by closeAll().
import { deadline } from '../../util/deadline.js';
import { abortError } from '../../qmp/abort.js';
import { QmpClient } from '../../qmp/qmp-client.js';
import type { QmpEvent } from '../../qmp/qmp-events.js';

/** One use of a guest's monitor; call release() when done. */
export interface MonitorLease {
  qmp: QmpClient;
  release(): Promise<void>;
}

interface Entry {
  client: QmpClient;
  ready: Promise<void>;
  users: number;
}

/** The pool of monitor connections. */
export class MonitorPool {
  readonly #entries = new Map<string, Entry>();
  readonly #onEvent: (guest: string, e: QmpEvent) => void;

  constructor(onEvent: (guest: string, e: QmpEvent) => void = () => undefined) {
    this.#onEvent = onEvent;
  }

  /** The guest's monitor at `path`, connecting (within `connectMs` and `signal`) when nobody holds it. */
  async acquire(guest: string, path: string, opts: { signal: AbortSignal; connectMs: number }): Promise<MonitorLease> {
    let entry = this.#entries.get(path);
    if (entry && entry.client.state !== 'running' && entry.client.state !== 'connecting') {
      this.#entries.delete(path);
      entry = undefined;
    }
    if (!entry) {
      const client = new QmpClient({ guest, idPrefix: `rcl-${process.pid}` });
      client.onEvent((e) => this.#onEvent(guest, e));
      const d = deadline(opts.connectMs, opts.signal);
      const ready = client.connect(path, { signal: d.signal }).finally(d.clear);
      entry = { client, ready, users: 0 };
      this.#entries.set(path, entry);
      ready.catch(() => {
        if (this.#entries.get(path) === entry) this.#entries.delete(path);
      });
    }
    entry.users++;
    const e = entry;
    try {
      await untilAborted(e.ready, opts.signal);
    } catch (err) {
      e.users--;
      // Nobody else waits: close the connection if it still comes up.
      if (e.users === 0) {
        e.ready.then(() => (e.users === 0 ? this.#drop(path, e) : undefined), () => undefined);
      }
      throw err;
    }
    let released = false;
    return {
      qmp: e.client,
      release: async () => {
        if (released) return;
        released = true;
        e.users--;
        if (e.users === 0) await this.#drop(path, e);
      },
    };
  }

  /** Run `body` with the guest's monitor and release it afterwards. */
  async with<T>(guest: string, path: string, opts: { signal: AbortSignal; connectMs: number }, body: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const lease = await this.acquire(guest, path, opts);
    try {
      return await body(lease.qmp);
    } finally {
      await lease.release();
    }
  }

  async #drop(path: string, e: Entry): Promise<void> {
    if (this.#entries.get(path) === e) this.#entries.delete(path);
    await e.client.close();
  }

  /** Close every connection. */
  async closeAll(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(entries.map((e) => e.client.close()));
  }
}

/** `p`, or the signal's reason if it aborts first (a shared connect keeps its own deadline). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal, 'connecting to the monitor'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal, 'connecting to the monitor'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
