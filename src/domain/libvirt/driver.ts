// The libvirt driver: the DomainDriver contract over virsh (one URI), guests
// addressed by UUID as `--domain=UUID`, waits fed by the lifecycle event stream.
import { InterruptedError, OperationRefusedError, isDomainError } from '../errors.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions, SaveOptions, StartOptions } from '../types.js';
import type { Log } from '../../util/log.js';
import { anySignal } from '../../util/deadline.js';
import { parseDomainXml } from './domain-xml.js';
import { createEventStream, type StreamEvent } from './events.js';
import { isUuid, parseDominfo, parseDomstate, parseUuidList } from './parse.js';
import { saveGuest } from './save.js';
import { createVirsh, type Virsh } from './virsh.js';
import { waitForGuestState, type WaitStats } from './waits.js';

/** Options of createLibvirtDriver. */
export interface LibvirtDriverOptions {
  uri: string;
  /** The virsh program (default `virsh`). */
  virsh?: string;
  /** Deadline of one quick virsh call (ms); a daemon that does not answer in time is "not reachable". */
  callTimeoutMs?: number;
  /** Deadline of a save, a start (restore) or a destroy (ms). */
  longCallTimeoutMs?: number;
  /** Where managedsave images go (default libvirt's for qemu:///system). */
  saveDirectory?: string;
  /** Poll interval of waits while the event stream is dead (ms, default 500). */
  pollMs?: number;
  /** Poll interval of waits while the event stream runs, in case it is silent (ms, default 5000). */
  safetyPollMs?: number;
  log?: Log;
}

/** The libvirt driver, with libvirt's extras. */
export interface LibvirtDriver extends DomainDriver {
  readonly kind: 'libvirt';
  /** How waits ended (event, poll, immediate): tests assert the mechanism with it. */
  readonly waitStats: WaitStats;
  /** The lifecycle event stream runs. */
  readonly eventsAlive: boolean;
  /** Resolves when libvirtd answers (`virsh version`); NotReachableError when it does not within the call deadline. */
  ping(opts: OpOptions & { timeoutMs?: number }): Promise<void>;
  /** Wake a guest from ACPI S3 (`virsh dompmwakeup`). */
  wake(id: string, opts: OpOptions): Promise<void>;
  /** Resume a paused guest (`virsh resume`). */
  resume(id: string, opts: OpOptions): Promise<void>;
  /** Names of the active virtual networks. */
  listActiveNetworks(opts: OpOptions): Promise<string[]>;
  /** Stop an active virtual network. */
  destroyNetwork(name: string, opts: OpOptions): Promise<void>;
}

const DEFAULT_SAVE_DIR = '/var/lib/libvirt/qemu/save';
// Guests listed at once: 16 × 4 virsh calls keep libvirtd busy without flooding it.
const LIST_BATCH = 16;

// The promise itself, marked handled: a rejection nobody ends up awaiting is not an unhandled one.
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** A DomainDriver over virsh for one libvirt URI. */
export function createLibvirtDriver(opts: LibvirtDriverOptions): LibvirtDriver {
  const log = opts.log;
  const virsh: Virsh = createVirsh({ uri: opts.uri, virsh: opts.virsh, callTimeoutMs: opts.callTimeoutMs, log });
  const longMs = opts.longCallTimeoutMs ?? 6 * 3600_000;
  const lifecycle = createEventStream({ virsh, kind: 'lifecycle', log });
  const reboots = createEventStream({ virsh, kind: 'reboot', log });
  const waitStats: WaitStats = { byEvent: 0, byPoll: 0, immediate: 0 };
  // Names seen for each UUID (events carry names only).
  const names = new Map<string, string>();
  const warned = new Set<string>();
  const dom = (id: string): string => `--domain=${id}`;

  const run = (args: string[], o: OpOptions & { guest?: string; timeoutMs?: number; long?: boolean }): Promise<string> =>
    virsh.run(args, {
      signal: o.signal,
      guest: o.guest,
      timeoutMs: o.long ? longMs : o.timeoutMs,
      onDeadline: o.long ? 'timed-out' : 'not-reachable',
      // A call that may rightly take long still fails fast when libvirtd stops answering.
      watchdog: o.long === true || (o.timeoutMs ?? 0) > virsh.callTimeoutMs,
    });

  const domstate = async (id: string, signal: AbortSignal): Promise<{ state: GuestState; detail: string }> =>
    parseDomstate(await run(['domstate', '--reason', dom(id)], { signal, guest: id }), `virsh domstate of ${id}`);

  const nameOf = async (id: string, signal: AbortSignal): Promise<string> => {
    const known = names.get(id);
    if (known !== undefined) return known;
    if (!isUuid(id)) return id;
    const info = parseDominfo(await run(['dominfo', dom(id)], { signal, guest: id }), `virsh dominfo of ${id}`);
    names.set(info.uuid, info.name);
    return info.name;
  };

  // The state and both XMLs of a guest, asked at once (each call keeps its own deadline).
  const guestFacts = (uuid: string, o: OpOptions, guest: string) => ({
    st: handled(domstate(uuid, o.signal)),
    liveXml: handled(run(['dumpxml', dom(uuid)], { ...o, guest })),
    configXml: handled(run(['dumpxml', '--inactive', dom(uuid)], { ...o, guest })),
  });

  const getGuest = async (id: string, o: OpOptions): Promise<Guest> => {
    // Given a UUID, the four calls go together; an answer that turns out not to be needed is dropped.
    const early = isUuid(id) ? guestFacts(id, o, id) : undefined;
    const info = parseDominfo(await run(['dominfo', dom(id)], { ...o, guest: id }), `virsh dominfo of ${id}`);
    names.set(info.uuid, info.name);
    const asked = early && info.uuid.toLowerCase() === id.toLowerCase() ? early : guestFacts(info.uuid, o, id);
    const st = await asked.st;
    const active = st.state !== 'shutoff';
    const where = `dumpxml of '${info.name}' (${info.uuid})`;
    const live = active ? parseDomainXml(await asked.liveXml, where) : undefined;
    const config = info.persistent ? parseDomainXml(await asked.configXml, `${where} --inactive`) : live;
    const facts = config ?? live;
    if (!facts) throw new OperationRefusedError(`guest ${info.name} (${info.uuid}) is neither active nor persistent`, { guest: id });
    for (const p of facts.policyProblems) {
      if (!warned.has(p)) log?.warn(p);
      warned.add(p);
    }
    const saveBlockers = [...(live ?? facts).saveBlockers];
    if (!info.persistent) saveBlockers.push('transient guest: libvirt keeps no managed save image of a guest it does not define');
    return {
      id: info.uuid,
      name: info.name,
      uri: opts.uri,
      state: st.state,
      stateDetail: st.detail,
      memoryKiB: live?.memoryKiB ?? facts.memoryKiB,
      persistent: info.persistent,
      autostart: info.autostart,
      hasSavedImage: info.managedSave,
      policy: facts.policy,
      saveBlockers,
    };
  };

  const waitDeps = (id: string) => ({
    stream: lifecycle,
    query: async (signal: AbortSignal) => (await domstate(id, signal)).state,
    pollMs: opts.pollMs ?? 500,
    safetyPollMs: opts.safetyPollMs ?? 5000,
    stats: waitStats,
  });

  // Resolves on the guest's reboot event; rejects when it stops instead, or when the stream dies (then the caller polls).
  const waitForReset = (name: string, signal: AbortSignal): { promise: Promise<void>; cancel: () => void } => {
    const cleanups: (() => void)[] = [];
    const cancel = (): void => {
      for (const c of cleanups.splice(0)) c();
    };
    const promise = new Promise<void>((resolve, reject) => {
      const end = (err?: Error): void => {
        cancel();
        if (err) reject(err);
        else resolve();
      };
      cleanups.push(reboots.subscribe((ev) => ev.name === name && end()));
      cleanups.push(reboots.onDeath(() => end()));
      cleanups.push(lifecycle.subscribe((ev) => {
        if (ev.name === name && ev.event === 'Stopped') end(new OperationRefusedError(`guest ${name} stopped (${ev.detail}) instead of rebooting`, { guest: name }));
      }));
      const onAbort = (): void => end(new InterruptedError(`reboot of ${name}: cut off before the guest was reset`, { cause: signal.reason, guest: name }));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => signal.removeEventListener('abort', onAbort));
    });
    promise.catch(() => undefined);
    return { promise, cancel };
  };

  const waitForState = async (id: string, states: readonly GuestState[], o: OpOptions): Promise<GuestState> => {
    lifecycle.ensure();
    const name = await nameOf(id, o.signal);
    return waitForGuestState(waitDeps(id), (ev) => ev.name === name, states, o.signal);
  };

  const driver: LibvirtDriver = {
    kind: 'libvirt',
    uri: opts.uri,
    saveDirectory: opts.saveDirectory ?? DEFAULT_SAVE_DIR,
    waitStats,
    get eventsAlive() {
      return lifecycle.alive;
    },

    async listGuests(o) {
      const ids = parseUuidList(await run(['list', '--all', '--uuid'], o));
      const guests: Guest[] = [];
      // Up to 4 × LIST_BATCH calls listen on one signal: one made to take them all.
      const all = anySignal(o.signal);
      try {
        // Many at a time: each guest costs four virsh calls, asked together.
        for (let i = 0; i < ids.length; i += LIST_BATCH) {
          const batch = await Promise.all(
            ids.slice(i, i + LIST_BATCH).map((id) =>
              getGuest(id, { ...o, signal: all.signal }).catch((err: unknown) => {
                if (isDomainError(err, 'not-found')) return undefined; // undefined between list and get
                throw err;
              }),
            ),
          );
          for (const g of batch) if (g) guests.push(g);
        }
      } finally {
        all.clear();
      }
      return guests;
    },

    getGuest,

    async save(id, o: SaveOptions) {
      const before = await domstate(id, o.signal);
      if (before.state === 'shutoff') throw new OperationRefusedError(`cannot save guest ${id}: it is not running (${before.detail})`, { guest: id });
      await saveGuest({ virsh, id, before: before.state, longMs, log, domstate }, o);
    },

    async abort(id, o) {
      try {
        await run(['domjobabort', dom(id)], { ...o, guest: id });
      } catch (err) {
        // No job running: nothing to abort, the guest is as it was.
        if (isDomainError(err, 'refused') && /no job|not running|not active/i.test(err.message)) return;
        throw err;
      }
    },

    async start(id, o: StartOptions) {
      const args = ['start', dom(id)];
      if (o.paused === true) args.push('--paused');
      await run(args, { ...o, guest: id, long: true });
      if (o.paused === false && (await domstate(id, o.signal)).state === 'paused') {
        await run(['resume', dom(id)], { ...o, guest: id });
      }
    },

    async shutdown(id, o) {
      await run(['shutdown', dom(id)], { ...o, guest: id });
    },

    async resume(id, o) {
      await run(['resume', dom(id)], { ...o, guest: id });
    },

    async wake(id, o) {
      await run(['dompmwakeup', dom(id)], { ...o, guest: id });
    },

    async reboot(id, o) {
      reboots.ensure();
      lifecycle.ensure();
      const name = await nameOf(id, o.signal);
      const streamed = reboots.alive;
      // Listen before asking, so the reset cannot slip by.
      const reset = waitForReset(name, o.signal);
      try {
        await run(['reboot', dom(id)], { ...o, guest: id });
        if (streamed) await reset.promise;
        else log?.warn(`no reboot event stream for ${opts.uri}: ${name} counts as rebooted once it runs`);
      } finally {
        reset.cancel();
      }
      const state = await waitForState(id, ['running', 'shutoff'], o);
      if (state === 'shutoff') throw new OperationRefusedError(`guest ${name} powered off instead of rebooting`, { guest: id });
    },

    async destroy(id, o) {
      try {
        await run(['destroy', dom(id)], { ...o, guest: id, timeoutMs: 120_000 });
      } catch (err) {
        // Already off is what destroy wants.
        if (isDomainError(err, 'refused') && (await domstate(id, o.signal)).state === 'shutoff') return;
        throw err;
      }
    },

    waitForState,

    onLifecycle(listener) {
      lifecycle.ensure();
      return lifecycle.subscribe((ev) => {
        const known = [...names].find(([, n]) => n === ev.name)?.[0];
        const emit = (guestId: string): void => {
          const out: LifecycleEvent = { guestId, name: ev.name, event: ev.event, detail: ev.detail, seenAt: ev.seenAt };
          if (ev.time !== undefined) out.sourceTime = ev.time;
          listener(out);
        };
        if (known) return emit(known);
        const ac = new AbortController();
        run(['domuuid', dom(ev.name)], { signal: ac.signal })
          .then((out) => {
            const uuid = out.trim().toLowerCase();
            names.set(uuid, ev.name);
            emit(uuid);
          })
          .catch(() => emit(ev.name));
      });
    },

    async ping(o) {
      await run(['version'], { signal: o.signal, timeoutMs: o.timeoutMs });
    },

    async listActiveNetworks(o) {
      const out = await run(['net-list', '--name'], o);
      return out.split('\n').map((l) => l.trim()).filter(Boolean);
    },

    async destroyNetwork(name, o) {
      await run(['net-destroy', `--network=${name}`], { ...o, guest: name });
    },

    async close() {
      await Promise.all([lifecycle.close(), reboots.close()]);
    },
  };
  return driver;
}

