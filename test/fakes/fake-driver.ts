// The machinery both scripted drivers share (libvirt-like-driver.ts and
// qmp-like-driver.ts build on it; tests import those): guests with states and
// lifecycle events, operations that take a given time on the clock (fake
// timers in the tests) or fail, and a log of every call with its time.
//
// Where the two real drivers differ, the fake follows `kind` (see the head of
// each kind's module for what it does, and for what still differs from the
// real driver). What both real drivers do alike, it does for both:
// - save of a shut-off guest is refused; a save pauses the guest first; a
//   failed or aborted save puts it back (resumed when it ran) unless the
//   script says that fails (`putBackFails`): then it is left paused;
// - a save whose first answer cannot be read (`saveUnreadable`) fails with a
//   ProtocolError before it has begun: the guest is left as it was;
// - a save can complete and still fail, its answer lost (`saveAnswerLost`):
//   the guest is off with its image;
// - abort with no save in flight is no error (libvirt's "no job" is swallowed
//   by the driver, qmp has nothing to cancel);
// - shutdown or reboot of a guest that is not running is refused;
//   a paused guest accepts the ACPI request but cannot act on it, and so does
//   one asleep in ACPI S3 (`suspended`), which cannot be saved either until
//   it is woken (`wake`: it runs again; `wakeFails`: refused);
// - destroy of a guest already off resolves (both drivers treat it as done);
// - start of an active guest is refused;
// - an unknown id throws GuestNotFoundError (so does a transient libvirt
//   guest once it is off: libvirt forgets it);
// - a reboot can end with the guest off (`rebootEndsOff`): refused;
// - every wait honours its signal;
// - a saved image is a file with an identity (`savedImageId`): each save
//   writes a new one.
// qmp only, as its driver does (src/domain/qmp/stale-image.ts): a guest listed
// running, paused or suspended with a saved image has one older than it
// (`staleImage`, and a `problem`); save, shutdown and destroy of a live guest
// move such an image aside (`stale-aside` in calls; `staleAsideFails`: it
// stays), and so do a wait that sees the guest off and a start, when the
// image is the one the listing found stale.
import { GuestNotFoundError, InterruptedError, NotReachableError, OperationRefusedError, ProtocolError, TimedOutError } from '../../src/domain/errors.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions, SaveOptions, StartOptions } from '../../src/domain/types.js';
import { now, sleep } from '../../src/util/deadline.js';

/** How one fake guest behaves. */
export interface FakeScript {
  /** ms a save takes (default 1000); `never` hangs until aborted. */
  saveMs?: number | 'never';
  /** The save fails with this message (after `saveFailsAfterMs`, default at once); the guest was paused, the driver puts it back. */
  saveFails?: string;
  saveFailsAfterMs?: number;
  /** The first N saves fail with a ProtocolError before they begin (an answer that could not be read: libvirt, the save's first `virsh domstate` came back empty; qmp, a monitor reply that is not JSON): the guest is left as it was. */
  saveUnreadable?: number;
  /** The failed save leaves the guest shut off (its QEMU died during the save: "domain is not running"). */
  saveEndsOff?: boolean;
  /**
   * The save completes (the image written, the guest off), but the call fails all the same: its answer
   * was lost. libvirt: `unreadable`, virsh died (SIGKILL) after libvirt had finished `managedsave`
   * (ProtocolError); `unreachable`, the connection dropped before libvirt's reply came (NotReachableError).
   * qmp, whichever is given: the image is in place, but QEMU did not exit within its grace after SIGKILL,
   * and went off just after (OperationRefusedError) — its only failure once the image is in place.
   */
  saveAnswerLost?: 'unreadable' | 'unreachable';
  /** Putting the guest back after a failed or aborted save fails: it is left paused. */
  putBackFails?: boolean;
  /** ms from an abort of the save job until the save lets go (default 0). */
  abortMs?: number;
  /** An aborted save still completes (the abort came too late: the image is written, the guest off), though the save call reports it aborted. */
  completesDespiteAbort?: boolean;
  /** The abort itself fails with this message (libvirtd does not answer). */
  abortFails?: string;
  /** ms from the ACPI request until the guest is off (default 1000); `never`: it ignores the request. */
  shutdownMs?: number | 'never';
  /** The shutdown request is refused at once. */
  shutdownFails?: string;
  /** The first N shutdown requests fail at once (a busy daemon); later ones work. */
  failedRequests?: number;
  /** The first N shutdown requests are lost (a guest still booting); later ones work. */
  lostPresses?: number;
  /** The guest goes off by itself this many ms after the run began (a crash, or a shutdown from inside). */
  offAtMs?: number;
  /** ms a start or restore takes (default 100). */
  startMs?: number;
  startFails?: string;
  /** Only the first N starts fail (with `startFails`); later ones work. */
  startFailsFirst?: number;
  /** Its saved image comes back paused unless asked otherwise (`paused: false`). */
  startsPaused?: boolean;
  /** ms a reboot takes (default 500); `never` hangs. */
  rebootMs?: number | 'never';
  /** The guest powers off instead of coming back from its reboot. */
  rebootEndsOff?: boolean;
  /** The destroy fails with this message (the process cannot be killed). */
  destroyFails?: string;
  /** Waking the guest from S3 is refused with this message. */
  wakeFails?: string;
  /** Every wait for a state fails at once (the daemon does not answer), though single state queries work. */
  waitFails?: boolean;
  /** qmp: moving an image older than the guest aside fails (it stays: the driver logs the error and goes on). */
  staleAsideFails?: boolean;
  /** Any operation on this guest throws this (a bug, not a domain error). */
  explodes?: string;
}

/** How the connection as a whole behaves. */
export interface FakeConnection {
  /** Listing the guests fails with this message (NotReachableError). */
  listFails?: string;
  /** Listing the guests hangs until its signal aborts (no call of it answers). */
  listHangs?: boolean;
  /** The listing's first call answers (`onAnswer`) after listAnswerMs (default 0), and the listing ends listMs after it began (many guests to describe). */
  listMs?: number;
  listAnswerMs?: number;
  /** libvirt only: ms the daemon takes to answer a ping (default 0); `never`: it hangs. */
  pingMs?: number | 'never';
  /** libvirt only: the ping fails at once with this message (NotReachableError: libvirtd down, or virsh killed). */
  pingFails?: string;
}

/** One call the fake saw, or one thing that happened to a guest (`saved`, `off`, `save-aborted`, `put-back`). */
export interface FakeCall {
  at: number;
  op: string;
  name: string;
}

/** A fake guest: its Guest fields and script. */
export type FakeGuest = Partial<Guest> & { name: string; script?: FakeScript };

/** Options of a fake driver. */
export interface FakeDriverOptions {
  uri?: string;
  saveDirectory?: string;
  /** Whether the driver can resume a paused guest (default true, as both real drivers can). */
  canResume?: boolean;
  /** Whether the driver can wake a guest from S3 (default true, as both real drivers can). */
  canWake?: boolean;
  connection?: FakeConnection;
}

/** A scripted driver with inspectable state. */
export interface FakeDriver extends DomainDriver {
  calls: FakeCall[];
  /** How often the guests were read: whole listings, and lookups of one guest by id (not in `calls`). */
  reads: { listings: number; lookups: string[] };
  /** The guest's state now, by name; `gone`: a transient guest libvirt forgot once it went off. */
  state(name: string): GuestState | 'gone';
  guests: Map<string, Guest>;
  /** The connection's script; tests may change it between steps. */
  connection: FakeConnection;
}

/** Build a fake driver of `kind` over the given guests (id = name unless given). */
export function createScriptedDriver(kind: 'libvirt' | 'qmp', list: FakeGuest[], opts: FakeDriverOptions = {}): FakeDriver {
  const uri = opts.uri ?? (kind === 'qmp' ? 'qmp:///fake/guests' : 'fake:///one');
  const guests = new Map<string, Guest>();
  // Transient guests libvirt forgot once they went off, by name.
  const gone = new Map<string, Guest>();
  const scripts = new Map<string, FakeScript>();
  const saves = new Map<string, { cancel: () => void }>();
  const waiters = new Set<() => void>();
  const listeners = new Set<(e: LifecycleEvent) => void>();
  const calls: FakeCall[] = [];
  const reads: FakeDriver['reads'] = { listings: 0, lookups: [] };
  const requests = new Map<string, number>();
  const connection: FakeConnection = { ...opts.connection };
  let images = 0;
  // qmp: the image each guest was listed with while it ran (older than it), by id.
  const staleSeen = new Map<string, string>();
  for (const g of list) {
    const id = g.id ?? g.name;
    const state = g.state ?? 'running';
    guests.set(id, {
      id,
      name: g.name,
      uri,
      state,
      stateDetail: g.stateDetail ?? state,
      memoryKiB: g.memoryKiB ?? 262144,
      persistent: kind === 'qmp' ? true : g.persistent ?? true,
      autostart: g.autostart ?? false,
      hasSavedImage: g.hasSavedImage ?? false,
      ...(g.hasSavedImage ? { savedImageId: g.savedImageId ?? `${g.name}.save#0` } : {}),
      policy: g.policy ?? {},
      saveBlockers: g.saveBlockers ?? [],
      ...(g.undescribed ? { undescribed: g.undescribed } : {}),
    });
    const script = g.script ?? {};
    scripts.set(id, script);
    if (script.offAtMs !== undefined) {
      setTimeout(() => {
        const cur = guests.get(id);
        if (cur && cur.state !== 'shutoff') {
          setState(id, 'shutoff', 'Stopped');
          note('off', id);
        }
      }, script.offAtMs);
    }
  }
  const get = (id: string): Guest => {
    const g = guests.get(id);
    if (!g) throw new GuestNotFoundError(kind === 'qmp' ? `no qmp guest ${id}` : `failed to get domain '${id}'`, { guest: id });
    return g;
  };
  const setState = (id: string, state: GuestState, event: string = state): void => {
    const g = get(id);
    g.state = state;
    g.stateDetail = state;
    // libvirt forgets a transient guest once it is off.
    if (state === 'shutoff' && !g.persistent) {
      guests.delete(id);
      gone.set(g.name, g);
    }
    for (const w of [...waiters]) w();
    for (const l of listeners) l({ guestId: id, name: g.name, event, detail: '', seenAt: now() });
  };
  const note = (op: string, id: string): void => {
    calls.push({ at: now(), op, name: guests.get(id)?.name ?? [...gone.values()].find((g) => g.id === id)?.name ?? id });
  };
  const log = (op: string, id: string): Guest => {
    const g = get(id);
    calls.push({ at: now(), op, name: g.name });
    const s = scripts.get(id);
    if (s?.explodes) throw new TypeError(s.explodes);
    return g;
  };
  const script = (id: string): FakeScript => scripts.get(id) ?? {};
  const live = (g: Guest): boolean => g.state === 'running' || g.state === 'paused' || g.state === 'suspended';
  // The guest as the driver describes it: qmp names an image older than the running guest.
  const describe = (g: Guest): Guest => {
    if (kind !== 'qmp' || !g.hasSavedImage || !live(g)) return { ...g };
    staleSeen.set(g.id, g.savedImageId ?? '');
    const problem = `/fake/save/${g.name}.save is older than the running guest: never restored; set aside when the guest is saved, shut down or destroyed`;
    return { ...g, staleImage: `/fake/save/${g.name}.save`, problem: g.problem ? `${g.problem}; ${problem}` : problem };
  };
  const writeImage = (g: Guest): void => {
    g.hasSavedImage = true;
    g.savedImageId = `${g.name}.save#${++images}`;
  };
  // qmp: move an image older than the guest aside (judged live, or as the very image the listing found stale).
  const setStaleAside = (g: Guest, judgeLive: boolean): void => {
    if (kind !== 'qmp' || !g.hasSavedImage) return;
    if (!(judgeLive && live(g)) && staleSeen.get(g.id) !== g.savedImageId) return;
    if (script(g.id).staleAsideFails) {
      note('stale-kept', g.id);
      return;
    }
    g.hasSavedImage = false;
    delete g.savedImageId;
    staleSeen.delete(g.id);
    note('stale-aside', g.id);
  };
  const notRunning = (g: Guest, what: string): OperationRefusedError =>
    new OperationRefusedError(kind === 'qmp' ? `cannot ${what} ${g.name}: it is not running (shut off)` : `Requested operation is not valid: domain is not running`, { guest: g.name });
  // Put a guest back after a failed or aborted save: resumed when it ran, unless the script says that fails.
  const putBack = (id: string, before: GuestState): void => {
    const s = script(id);
    if (get(id).state !== 'paused' || before !== 'running' || s.putBackFails) return;
    setState(id, 'running', 'Resumed');
    note('put-back', id);
  };
  // A wait that rejects when the signal aborts; resolves when `until` says so (checked on each state change).
  const waitUntil = (signal: AbortSignal, until?: () => boolean): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        cleanup();
        reject(signal.reason);
      };
      const w = (): void => {
        try {
          if (!until?.()) return;
          cleanup();
          resolve();
        } catch (err) {
          cleanup();
          reject(err);
        }
      };
      const cleanup = (): void => {
        waiters.delete(w);
        signal.removeEventListener('abort', onAbort);
      };
      if (signal.aborted) return reject(signal.reason);
      waiters.add(w);
      w();
      if (!waiters.has(w)) return;
      signal.addEventListener('abort', onAbort, { once: true });
    });
  // The error of a save that completed but whose answer was lost (see `saveAnswerLost`).
  const answerLost = (g: Guest, how: 'unreadable' | 'unreachable'): Error => {
    if (kind === 'qmp') return new OperationRefusedError(`${g.name}: QEMU (pid 4242) survived SIGKILL`, { guest: g.name });
    const cmd = `managedsave --verbose --domain=${g.id}`;
    return how === 'unreadable'
      ? new ProtocolError(`${cmd}: virsh died of SIGKILL`, { guest: g.name })
      : new NotReachableError(`${cmd}: cannot recv data: Connection reset by peer`, { guest: g.name });
  };
  const interrupted = (what: string, signal: AbortSignal, guest?: string): Error => {
    const reason: unknown = signal.reason;
    if (reason instanceof Error && reason.name === 'DeadlineError') return new TimedOutError(`${what}: ${reason.message}`, { guest });
    return new InterruptedError(`${what}: interrupted`, { cause: reason, guest });
  };

  const driver: FakeDriver = {
    kind,
    uri,
    saveDirectory: opts.saveDirectory ?? '/fake/save',
    calls,
    reads,
    guests,
    connection,
    state: (name) => [...guests.values()].find((g) => g.name === name)?.state ?? (gone.has(name) ? 'gone' : 'other'),
    async listGuests(o) {
      reads.listings++;
      if (connection.listHangs) {
        await waitUntil(o.signal).catch(() => undefined);
        throw interrupted('listing the guests', o.signal);
      }
      if (connection.listFails) throw new NotReachableError(connection.listFails);
      // The list of ids answers after listAnswerMs; describing the guests takes until listMs.
      const pause = async (ms: number): Promise<void> => {
        if (ms > 0) {
          await sleep(ms, o.signal).catch(() => {
            throw interrupted('listing the guests', o.signal);
          });
        }
      };
      await pause(connection.listAnswerMs ?? 0);
      o.onAnswer?.('list');
      await pause((connection.listMs ?? 0) - (connection.listAnswerMs ?? 0));
      return [...guests.values()].map(describe);
    },
    async getGuest(id) {
      reads.lookups.push(id);
      return describe(get(id));
    },
    async save(id, o: SaveOptions) {
      const g = log('save', id);
      const s = script(id);
      if (s.saveUnreadable !== undefined && s.saveUnreadable > 0) {
        s.saveUnreadable--;
        throw new ProtocolError(kind === 'qmp' ? `/fake/run/${g.name}/qmp.sock: not JSON: ""` : `virsh domstate of ${id}: cannot read ""`, { guest: g.name });
      }
      if (g.state === 'shutoff') throw notRunning(g, 'save');
      setStaleAside(g, true);
      if (g.state === 'suspended') throw new OperationRefusedError(kind === 'qmp' ? `cannot save ${g.name}: it is suspended (S3)` : 'Requested operation is not valid: domain is pmsuspended', { guest: g.name });
      const before = g.state;
      // Both drivers stop the guest's CPUs before its RAM is written.
      if (before === 'running') setState(id, 'paused', 'Suspended');
      let cancelled = false;
      const cancel = new AbortController();
      saves.set(id, {
        cancel: () => {
          cancelled = true;
          cancel.abort(new Error('save job aborted'));
        },
      });
      // The caller's signal aborts the job as the driver would (libvirt: domjobabort; qmp: migrate_cancel).
      const onCallerAbort = (): void => saves.get(id)?.cancel();
      o.signal.addEventListener('abort', onCallerAbort, { once: true });
      if (o.signal.aborted) onCallerAbort();
      try {
        if (s.saveFails !== undefined) {
          if (s.saveFailsAfterMs) await sleep(s.saveFailsAfterMs, cancel.signal);
          if (s.saveEndsOff) {
            setState(id, 'shutoff', 'Stopped');
            note('off', id);
            throw new OperationRefusedError(kind === 'qmp' ? `saving ${g.name}: migration failed: ${s.saveFails}` : s.saveFails, { guest: g.name });
          }
          putBack(id, before);
          throw new OperationRefusedError(kind === 'qmp' ? `saving ${g.name}: migration failed: ${s.saveFails}` : s.saveFails, { guest: g.name });
        }
        if (s.saveMs === 'never') {
          await waitUntil(cancel.signal);
        } else {
          const total = s.saveMs ?? 1000;
          for (let i = 1; i <= 4; i++) {
            await sleep(total / 4, cancel.signal);
            o.onProgress?.({ fraction: i / 4 });
          }
        }
        writeImage(g);
        setState(id, 'shutoff', 'Stopped');
        note('saved', id);
        if (s.saveAnswerLost) throw answerLost(g, s.saveAnswerLost);
      } catch (err) {
        if (!cancelled) throw err;
        // The job lets go of the guest a moment after its abort.
        if (s.abortMs) await sleep(s.abortMs);
        if (s.completesDespiteAbort) {
          writeImage(g);
          setState(id, 'shutoff', 'Stopped');
          note('saved', id);
          throw new InterruptedError(`save of ${g.name} aborted`, { guest: g.name });
        }
        note('save-aborted', id);
        putBack(id, before);
        if (s.putBackFails && before === 'running' && kind === 'qmp') {
          throw new OperationRefusedError(`saving ${g.name} failed, and resuming it failed too (it may be left paused)`, { guest: g.name });
        }
        throw new InterruptedError(`save of ${g.name} aborted`, { guest: g.name });
      } finally {
        o.signal.removeEventListener('abort', onCallerAbort);
        saves.delete(id);
      }
    },
    async abort(id, o) {
      const g = log('abort', id);
      const s = script(id);
      if (s.abortFails) throw new NotReachableError(s.abortFails, { guest: g.name });
      const job = saves.get(id);
      if (!job) {
        note('no-job', id);
        return;
      }
      job.cancel();
      // qmp's abort waits until the save has let go; libvirt's domjobabort returns once the job is told.
      if (kind === 'qmp' && s.abortMs) await sleep(s.abortMs, o.signal);
    },
    async start(id, o: StartOptions) {
      const g = log(get(id).hasSavedImage ? 'restore' : 'start', id);
      const s = script(id);
      if (s.startFails && (s.startFailsFirst === undefined || s.startFailsFirst-- > 0)) throw new OperationRefusedError(s.startFails, { guest: g.name });
      if (g.state !== 'shutoff') throw new OperationRefusedError(kind === 'qmp' ? `cannot start ${g.name}: it is already running` : 'Requested operation is not valid: domain is already active', { guest: g.name });
      setStaleAside(g, false);
      await sleep(s.startMs ?? 100, o.signal);
      g.hasSavedImage = false;
      delete g.savedImageId;
      setState(id, (o.paused ?? s.startsPaused) ? 'paused' : 'running', 'Started');
      // libvirt's start reads the state after it in the same virsh process; qmp's gives none.
      return kind === 'libvirt' ? get(id).state : undefined;
    },
    async shutdown(id) {
      const g = log('shutdown', id);
      const s = script(id);
      if (g.state === 'shutoff') throw notRunning(g, 'shut down');
      setStaleAside(g, true);
      if (s.shutdownFails) throw new OperationRefusedError(s.shutdownFails, { guest: g.name });
      const n = requests.get(id) ?? 0;
      requests.set(id, n + 1);
      if (n < (s.failedRequests ?? 0)) throw new NotReachableError('the daemon is busy', { guest: g.name });
      // libvirt's request reads the state after it in the same virsh process; qmp's gives none.
      const after = kind === 'libvirt' ? g.state : undefined;
      if (g.state === 'paused' || g.state === 'suspended') return after; // accepted, but a paused or sleeping guest cannot act on it
      if (s.shutdownMs === 'never' || n - (s.failedRequests ?? 0) < (s.lostPresses ?? 0)) return after;
      setTimeout(() => {
        if (g.state === 'running') {
          setState(id, 'shutoff', 'Stopped');
          note('off', id);
        }
      }, s.shutdownMs ?? 1000);
      return after;
    },
    async reboot(id, o: OpOptions) {
      const g = log('reboot', id);
      const s = script(id);
      if (g.state !== 'running' && g.state !== 'paused') throw notRunning(g, 'reboot');
      if (s.rebootMs === 'never') await waitUntil(o.signal);
      else await sleep(s.rebootMs ?? 500, o.signal);
      if (s.rebootEndsOff) {
        setState(id, 'shutoff', 'Stopped');
        throw new OperationRefusedError(kind === 'qmp' ? `rebooted ${g.name}, but it is shutdown` : `guest ${g.name} powered off instead of rebooting`, { guest: g.name });
      }
      setState(id, 'running', 'Rebooted');
    },
    async destroy(id) {
      const g = log('destroy', id);
      const s = script(id);
      if (g.state === 'shutoff') return;
      if (s.destroyFails) throw new OperationRefusedError(s.destroyFails, { guest: g.name });
      setStaleAside(g, true);
      setState(id, 'shutoff', 'Stopped');
    },
    async waitForState(id, states, o: OpOptions) {
      if (script(id).waitFails) throw new NotReachableError(kind === 'qmp' ? `monitor of ${id} does not answer` : 'libvirtd does not answer');
      let st: GuestState = get(id).state;
      await waitUntil(o.signal, () => states.includes((st = get(id).state)));
      if (st === 'shutoff') setStaleAside(get(id), false);
      return st;
    },
    onLifecycle(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    async close() {
      for (const job of saves.values()) job.cancel();
    },
  };
  if (opts.canWake !== false) {
    driver.wake = async (id) => {
      const g = log('wake', id);
      const s = script(id);
      if (s.wakeFails) throw new OperationRefusedError(s.wakeFails, { guest: g.name });
      if (g.state === 'suspended') setState(id, 'running', 'Started');
    };
  }
  if (opts.canResume !== false) {
    driver.resume = async (id) => {
      const g = log('resume', id);
      if (g.state === 'shutoff') throw notRunning(g, 'resume');
      if (g.state === 'paused') setState(id, 'running', 'Resumed');
    };
  }
  return driver;
}
