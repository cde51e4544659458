// A DomainDriver for a libvirt whose daemon does not answer: guests come from
// libvirt's status files, shutdown goes to the guest's QMP monitor
// (`system_powerdown`), destroy is `quit` then a checked SIGKILL, and a save is
// refused, so the escalation ladder can run on it unchanged. The monitors must
// have been released first (the hung libvirtd ended): see rescue.ts.
import { now } from '../../util/deadline.js';
import { GuestNotFoundError, InterruptedError, OperationRefusedError } from '../errors.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions } from '../types.js';
import type { Log } from '../../util/log.js';
import { connectQmp, type QmpClient } from '../../qmp/qmp-client.js';
import { isGuestQemu, queryStatus, quitOrKill } from './rescue.js';
import { DEFAULT_STATUS_DIR, readStatusFiles, type StatusGuest } from './status-files.js';

/** Options of createLibvirtRescueDriver. */
export interface LibvirtRescueDriverOptions {
  uri: string;
  statusDir?: string;
  log: Log;
  saveDirectory?: string;
  /** Deadline of connecting to a monitor and getting its greeting (ms, default 3000). */
  connectTimeoutMs?: number;
  /** After `quit`, how long to wait before SIGKILL (ms, default 3000). */
  quitWaitMs?: number;
  /** Poll interval of waits between QMP events (ms, default 500). */
  pollMs?: number;
}

const QEMU_STATES: Record<string, GuestState> = { running: 'running', paused: 'paused', shutdown: 'shutoff', shutoff: 'shutoff' };

/** The rescue driver: the contract, plus `resume` (QMP `cont`). */
export type LibvirtRescueDriver = DomainDriver & { resume(id: string, opts: OpOptions): Promise<void> };

/** The rescue driver over status files and QMP. */
export function createLibvirtRescueDriver(opts: LibvirtRescueDriverOptions): LibvirtRescueDriver {
  const statusDir = opts.statusDir ?? DEFAULT_STATUS_DIR;
  const clients = new Map<string, QmpClient>();
  const listeners = new Set<(ev: LifecycleEvent) => void>();
  const emit = (g: StatusGuest, event: string, detail: string): void => {
    for (const l of [...listeners]) l({ guestId: g.uuid, name: g.name, event, detail, seenAt: now() });
  };

  const find = async (id: string): Promise<StatusGuest> => {
    const { guests } = await readStatusFiles(statusDir);
    const g = guests.find((x) => x.uuid === id.toLowerCase() || x.name === id);
    if (!g) throw new GuestNotFoundError(`no status file of guest ${id} in ${statusDir}`, { guest: id });
    return g;
  };

  const monitor = async (g: StatusGuest, signal: AbortSignal): Promise<QmpClient> => {
    const have = clients.get(g.uuid);
    if (have && have.state === 'running') return have;
    const timeout = AbortSignal.any([signal, AbortSignal.timeout(opts.connectTimeoutMs ?? 3000)]);
    const c = await connectQmp(g.monitorPath, { signal: timeout, guest: g.name });
    c.onEvent((e) => {
      if (e.event === 'SHUTDOWN') emit(g, 'Shutdown', String((e.data as { reason?: unknown } | undefined)?.reason ?? ''));
      if (e.event === 'STOP') emit(g, 'Suspended', '');
      if (e.event === 'RESUME') emit(g, 'Resumed', '');
    });
    clients.set(g.uuid, c);
    return c;
  };

  const stateOf = async (g: StatusGuest, signal: AbortSignal): Promise<{ state: GuestState; detail: string }> => {
    if (!(await isGuestQemu(g))) return { state: 'shutoff', detail: 'shut off (QEMU exited)' };
    const c = clients.get(g.uuid);
    const s = c && c.state === 'running' ? await queryStatus(c, signal) : g.state;
    return { state: QEMU_STATES[s] ?? 'other', detail: `${s} (QEMU, libvirtd not answering)` };
  };

  const toGuest = async (g: StatusGuest, signal: AbortSignal): Promise<Guest> => {
    const st = await stateOf(g, signal);
    return {
      id: g.uuid,
      name: g.name,
      uri: opts.uri,
      state: st.state,
      stateDetail: st.detail,
      memoryKiB: g.facts.memoryKiB,
      persistent: true,
      autostart: false,
      hasSavedImage: false,
      policy: g.facts.policy,
      saveBlockers: ['libvirtd not answering: cannot managedsave', ...g.facts.saveBlockers],
    };
  };

  return {
    kind: 'libvirt',
    uri: opts.uri,
    saveDirectory: opts.saveDirectory ?? '/var/lib/libvirt/qemu/save',
    async listGuests(o) {
      const { guests, problems } = await readStatusFiles(statusDir);
      for (const p of problems) opts.log.warn(`rescue: ${p}`);
      const live = await Promise.all(guests.map((g) => isGuestQemu(g)));
      return Promise.all(guests.filter((_, i) => live[i]).map((g) => toGuest(g, o.signal)));
    },
    async getGuest(id, o) {
      return toGuest(await find(id), o.signal);
    },
    async save(id) {
      throw new OperationRefusedError(`libvirtd not answering: cannot managedsave guest ${id}`, { guest: id });
    },
    async abort() {
      // No libvirt job can run without libvirtd.
    },
    async start(id) {
      throw new OperationRefusedError(`libvirtd not answering: cannot start guest ${id}`, { guest: id });
    },
    async shutdown(id, o) {
      const g = await find(id);
      const c = await monitor(g, o.signal);
      if ((await queryStatus(c, o.signal)) === 'paused') {
        opts.log.warn(`rescue: ${g.name} is paused: resuming it so it sees the power button`);
        await c.execute('cont', undefined, o);
      }
      await c.execute('system_powerdown', undefined, o);
    },
    async resume(id, o) {
      const g = await find(id);
      await (await monitor(g, o.signal)).execute('cont', undefined, o);
    },
    async reboot(id) {
      throw new OperationRefusedError(`libvirtd not answering: cannot reboot guest ${id}`, { guest: id });
    },
    async destroy(id, o: OpOptions) {
      const g = await find(id);
      if (!(await isGuestQemu(g))) return;
      // QMP quit when the monitor answers; else straight to the checked SIGKILL.
      const c = clients.get(g.uuid) ?? (await monitor(g, o.signal).catch(() => undefined));
      const r = await quitOrKill(g, c, opts.quitWaitMs ?? 3000);
      clients.get(g.uuid)?.close().catch(() => undefined);
      clients.delete(g.uuid);
      if (r.result === 'failed') throw new OperationRefusedError(`destroy of ${g.name}: ${r.reason}`, { guest: id });
      emit(g, 'Stopped', 'Destroyed');
    },
    async waitForState(id, states, o) {
      const g = await find(id);
      for (;;) {
        if (o.signal.aborted) throw new InterruptedError(`wait for ${g.name}: cut off`, { cause: o.signal.reason, guest: id });
        const st = await stateOf(g, o.signal);
        if (states.includes(st.state)) return st.state;
        // A QMP event (or the poll interval) wakes the next look.
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, opts.pollMs ?? 500);
          const off = clients.get(g.uuid)?.onEvent(done);
          o.signal.addEventListener('abort', done, { once: true });
          function done(): void {
            clearTimeout(t);
            off?.();
            o.signal.removeEventListener('abort', done);
            resolve();
          }
        });
      }
    },
    onLifecycle(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      const all = [...clients.values()];
      clients.clear();
      await Promise.all(all.map((c) => c.close().catch(() => undefined)));
    },
  };
}
