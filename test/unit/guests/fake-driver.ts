// A scripted DomainDriver for unit tests: guests whose save, shutdown, start
// and reboot take a given time (on the fake clock) or fail, and a log of every
// call with its time, so tests can check the order of events.
import { GuestNotFoundError, InterruptedError, NotReachableError, OperationRefusedError } from '../../../src/domain/errors.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions, SaveOptions, StartOptions } from '../../../src/domain/types.js';
import { now, sleep } from '../../../src/util/deadline.js';

/** How one fake guest behaves. */
export interface FakeScript {
  /** ms a save takes (default 1000); `never` hangs until aborted. */
  saveMs?: number | 'never';
  /** The save fails at once with this message (the guest is left as it was). */
  saveFails?: string;
  /** ms from the ACPI request until the guest is off (default 1000); `never`: it ignores the request. */
  shutdownMs?: number | 'never';
  /** The shutdown request is refused at once. */
  shutdownFails?: string;
  /** The first N shutdown requests fail at once (a busy daemon); later ones work. */
  failedRequests?: number;
  /** The first N shutdown requests are lost (a guest still booting); later ones work. */
  lostPresses?: number;
  /** ms a start or restore takes (default 100). */
  startMs?: number;
  startFails?: string;
  /** Only the first N starts fail (with `startFails`); later ones work. */
  startFailsFirst?: number;
  /** Its saved image comes back paused unless asked otherwise (`paused: false`). */
  startsPaused?: boolean;
  /** ms a reboot takes (default 500); `never` hangs. */
  rebootMs?: number | 'never';
  /** Every wait for a state fails at once (the daemon does not answer). */
  waitFails?: boolean;
  /** Any operation on this guest throws this (a bug, not a domain error). */
  explodes?: string;
}

/** One call the fake saw. */
export interface FakeCall {
  at: number;
  op: string;
  name: string;
}

/** A fake guest: its Guest fields and script. */
export type FakeGuest = Partial<Guest> & { name: string; script?: FakeScript };

/** A scripted driver with inspectable state. */
export interface FakeDriver extends DomainDriver {
  calls: FakeCall[];
  state(name: string): GuestState;
  guests: Map<string, Guest>;
}

/** Build a fake driver over the given guests (id = name unless given). */
export function createFakeDriver(list: FakeGuest[], opts: { uri?: string; saveDirectory?: string; canResume?: boolean } = {}): FakeDriver {
  const uri = opts.uri ?? 'fake:///one';
  const guests = new Map<string, Guest>();
  const scripts = new Map<string, FakeScript>();
  const saves = new Map<string, AbortController>();
  const waiters = new Set<() => void>();
  const listeners = new Set<(e: LifecycleEvent) => void>();
  const calls: FakeCall[] = [];
  const requests = new Map<string, number>();
  for (const g of list) {
    const id = g.id ?? g.name;
    guests.set(id, {
      id,
      name: g.name,
      uri,
      state: g.state ?? 'running',
      stateDetail: g.stateDetail ?? g.state ?? 'running',
      memoryKiB: g.memoryKiB ?? 262144,
      persistent: g.persistent ?? true,
      autostart: g.autostart ?? false,
      hasSavedImage: g.hasSavedImage ?? false,
      policy: g.policy ?? {},
      saveBlockers: g.saveBlockers ?? [],
    });
    scripts.set(id, g.script ?? {});
  }
  const get = (id: string): Guest => {
    const g = guests.get(id);
    if (!g) throw new GuestNotFoundError(`no guest ${id}`, { guest: id });
    return g;
  };
  const setState = (id: string, state: GuestState, event: string = state): void => {
    const g = get(id);
    g.state = state;
    g.stateDetail = state;
    for (const w of [...waiters]) w();
    for (const l of listeners) l({ guestId: id, name: g.name, event, detail: '', seenAt: now() });
  };
  const log = (op: string, id: string): Guest => {
    const g = get(id);
    calls.push({ at: now(), op, name: g.name });
    const s = scripts.get(id);
    if (s?.explodes) throw new TypeError(s.explodes);
    return g;
  };
  const script = (id: string): FakeScript => scripts.get(id) ?? {};
  const driver: FakeDriver = {
    kind: 'libvirt',
    uri,
    saveDirectory: opts.saveDirectory ?? '/fake/save',
    calls,
    guests,
    state: (name) => [...guests.values()].find((g) => g.name === name)?.state ?? 'other',
    async listGuests() {
      return [...guests.values()].map((g) => ({ ...g }));
    },
    async getGuest(id) {
      return { ...get(id) };
    },
    async save(id, o: SaveOptions) {
      const g = log('save', id);
      const s = script(id);
      if (s.saveFails) throw new OperationRefusedError(s.saveFails, { guest: g.name });
      const before = g.state;
      setState(id, 'paused');
      const ac = new AbortController();
      saves.set(id, ac);
      const both = AbortSignal.any([ac.signal, o.signal]);
      try {
        if (s.saveMs === 'never') {
          await new Promise((_, reject) => both.addEventListener('abort', () => reject(new InterruptedError('save aborted')), { once: true }));
        } else {
          const total = s.saveMs ?? 1000;
          for (let i = 1; i <= 4; i++) {
            await sleep(total / 4, both);
            o.onProgress?.({ fraction: i / 4 });
          }
        }
        g.hasSavedImage = true;
        setState(id, 'shutoff');
        calls.push({ at: now(), op: 'saved', name: g.name });
      } catch {
        setState(id, before);
        calls.push({ at: now(), op: 'save-aborted', name: g.name });
        throw new InterruptedError('save aborted', { guest: g.name });
      } finally {
        saves.delete(id);
      }
    },
    async abort(id) {
      log('abort', id);
      saves.get(id)?.abort();
    },
    async start(id, o: StartOptions) {
      const g = log(g0(id).hasSavedImage ? 'restore' : 'start', id);
      const s = script(id);
      if (s.startFails && (s.startFailsFirst === undefined || s.startFailsFirst-- > 0)) throw new OperationRefusedError(s.startFails, { guest: g.name });
      if (g.state !== 'shutoff') throw new OperationRefusedError('already active', { guest: g.name });
      await sleep(s.startMs ?? 100, o.signal);
      g.hasSavedImage = false;
      setState(id, (o.paused ?? s.startsPaused) ? 'paused' : 'running');
    },
    async shutdown(id) {
      const g = log('shutdown', id);
      const s = script(id);
      if (s.shutdownFails) throw new OperationRefusedError(s.shutdownFails, { guest: g.name });
      const n = requests.get(id) ?? 0;
      requests.set(id, n + 1);
      if (n < (s.failedRequests ?? 0)) throw new NotReachableError('the daemon is busy', { guest: g.name });
      if (g.state === 'paused') return; // a paused guest cannot act on it
      if (s.shutdownMs === 'never' || n - (s.failedRequests ?? 0) < (s.lostPresses ?? 0)) return;
      setTimeout(() => {
        if (g.state === 'running') {
          setState(id, 'shutoff');
          calls.push({ at: now(), op: 'off', name: g.name });
        }
      }, s.shutdownMs ?? 1000);
    },
    async reboot(id, o: OpOptions) {
      log('reboot', id);
      const s = script(id);
      if (s.rebootMs === 'never') {
        await sleep(1e9, o.signal);
      } else {
        await sleep(s.rebootMs ?? 500, o.signal);
      }
      setState(id, 'running', 'Rebooted');
    },
    async destroy(id) {
      log('destroy', id);
      setState(id, 'shutoff');
    },
    async waitForState(id, states, o: OpOptions) {
      if (script(id).waitFails) throw new NotReachableError('libvirtd does not answer');
      return new Promise<GuestState>((resolve, reject) => {
        const check = (): boolean => {
          const st = get(id).state;
          if (states.includes(st)) {
            cleanup();
            resolve(st);
            return true;
          }
          return false;
        };
        const onAbort = (): void => {
          cleanup();
          reject(o.signal.reason);
        };
        const w = (): void => void check();
        const cleanup = (): void => {
          waiters.delete(w);
          o.signal.removeEventListener('abort', onAbort);
        };
        if (o.signal.aborted) {
          reject(o.signal.reason);
          return;
        }
        if (check()) return;
        waiters.add(w);
        o.signal.addEventListener('abort', onAbort, { once: true });
      });
    },
    onLifecycle(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    async close() {
      return undefined;
    },
  };
  if (opts.canResume !== false) {
    driver.resume = async (id) => {
      log('resume', id);
      setState(id, 'running');
    };
  }
  function g0(id: string): Guest {
    return get(id);
  }
  return driver;
}
