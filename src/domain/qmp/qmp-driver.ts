// The QMP driver: QEMU guests defined in QEMU_GUESTS_DIR/NAME.json, run by
// QEMU directly (daemonized, a QMP socket and pidfile under our runtime
// directory), saved to and restored from our save directory.
import { join } from 'node:path';
import type { Log } from '../../report/log.js';
import { deadline, sleep } from '../../util/deadline.js';
import { errorMessage, GuestNotFoundError, OperationRefusedError } from '../errors.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions, SaveOptions, StartOptions } from '../types.js';
import { abortError } from './abort.js';
import { qmpCommand, stateOfRunState, type DriverContext, type GuestFiles, type QmpStatus } from './driver-context.js';
import { checkGuestName, listDefinitionFiles, loadDefinition, type QmpGuestDefinition } from './guest-definition.js';
import { MonitorPool } from './monitor-pool.js';
import type { QmpClient } from './qmp-client.js';
import { ensurePrivateDir } from './private-dir.js';
import { startGuest } from './qmp-restore.js';
import { quitAndReap, saveGuest, SAVE_MAX_BANDWIDTH } from './qmp-save.js';
import { checkProcess, runtimePaths } from './qemu-process.js';
import { hasImage, savedImagePaths } from './saved-image.js';

/** Options of createQmpDriver. */
export interface QmpDriverOptions {
  /** Where NAME.json definitions live (QEMU_GUESTS_DIR). */
  guestsDir: string;
  /** The runtime directory (QMP sockets, pidfiles), created 0700. */
  runDir: string;
  /** The save directory (images and sidecars), created 0700. */
  saveDir: string;
  log?: Log;
  /** Deadline of one QMP command, connection or QEMU launch (default 10 s). */
  qemuTimeoutMs?: number;
  /** `max-bandwidth` of a save, bytes/s (default SAVE_MAX_BANDWIDTH, 64 GiB/s: unthrottled). */
  saveBandwidth?: number;
}

/** How often waitForState polls. */
const STATE_POLL_MS = 200;

/** A DomainDriver for QEMU guests run directly through QMP. */
export function createQmpDriver(opts: QmpDriverOptions): DomainDriver {
  const listeners = new Set<(e: LifecycleEvent) => void>();
  const emit = (guest: string, event: string, detail: string, sourceTime?: number): void => {
    const e: LifecycleEvent = { guestId: guest, name: guest, event, detail, seenAt: performance.now() };
    if (sourceTime !== undefined) e.sourceTime = sourceTime;
    for (const l of listeners) {
      try {
        l(e);
      } catch {
        /* a listener's failure is its own */
      }
    }
  };
  const pool = new MonitorPool((guest, e) => {
    if (e.event === 'SHUTDOWN') emit(guest, 'Shutdown', String(e.data['reason'] ?? ''), e.timestamp);
    else if (e.event === 'STOP') emit(guest, 'Suspended', 'Paused', e.timestamp);
    else if (e.event === 'RESUME') emit(guest, 'Resumed', 'Unpaused', e.timestamp);
    else if (e.event === 'RESET') emit(guest, 'Rebooted', e.data['guest'] === true ? 'guest' : 'host', e.timestamp);
  });
  const ctx: DriverContext = { pool, qemuTimeoutMs: opts.qemuTimeoutMs ?? 10_000, saveBandwidth: opts.saveBandwidth ?? SAVE_MAX_BANDWIDTH, log: opts.log, emit };
  const uri = `qmp://${opts.guestsDir}`;
  const saves = new Map<string, { ac: AbortController; done: Promise<void> }>();
  const starting = new Set<string>();
  let dirsReady: Promise<void> | undefined;

  const ensureDirs = (): Promise<void> => {
    dirsReady ??= Promise.all([ensurePrivateDir(opts.runDir), ensurePrivateDir(opts.saveDir)]).then(() => undefined);
    dirsReady.catch(() => (dirsReady = undefined));
    return dirsReady;
  };

  const filesOf = (def: QmpGuestDefinition): GuestFiles => ({
    def,
    run: runtimePaths(opts.runDir, def.name),
    saved: savedImagePaths(opts.saveDir, def.name),
  });

  const load = async (id: string): Promise<GuestFiles> => {
    await ensureDirs();
    const bad = checkGuestName(id);
    if (bad) throw new GuestNotFoundError(`no qmp guest ${JSON.stringify(id)}: ${bad}`, { guest: id });
    const file = join(opts.guestsDir, `${id}.json`);
    const files = await listDefinitionFiles(opts.guestsDir);
    if (!files.includes(file)) throw new GuestNotFoundError(`no qmp guest ${id} (no ${file})`, { guest: id });
    return filesOf(await loadDefinition(file));
  };

  /** The guest's process (pid when alive) and QEMU's run state. */
  const probe = async (g: GuestFiles, signal: AbortSignal): Promise<{ pid: number | undefined; state: GuestState; detail: string }> => {
    let proc: Awaited<ReturnType<typeof checkProcess>>;
    try {
      proc = await checkProcess(g.run);
    } catch (err) {
      return { pid: undefined, state: 'other', detail: `cannot check the process: ${errorMessage(err)}` };
    }
    if (!proc.alive || proc.pid === undefined) return { pid: undefined, state: 'shutoff', detail: `shut off (${proc.detail})` };
    try {
      const st = await pool.with(g.def.name, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs }, (qmp) => qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal));
      return { pid: proc.pid, state: stateOfRunState(st.status), detail: st.status };
    } catch (err) {
      if (signal.aborted) throw abortError(signal, `querying ${g.def.name}`, g.def.name);
      const again = await checkProcess(g.run);
      if (!again.alive) return { pid: undefined, state: 'shutoff', detail: `shut off (${again.detail})` };
      return { pid: proc.pid, state: 'other', detail: `monitor not usable: ${errorMessage(err)}` };
    }
  };

  const describe = async (g: GuestFiles, signal: AbortSignal): Promise<Guest> => {
    const p = await probe(g, signal);
    let hasSavedImage = false;
    const saveBlockers = [...g.def.saveBlockers];
    try {
      hasSavedImage = await hasImage(g.saved);
    } catch (err) {
      saveBlockers.push(`unusable save path: ${errorMessage(err)}`);
    }
    return {
      id: g.def.name,
      name: g.def.name,
      uri,
      state: p.state,
      stateDetail: p.detail,
      memoryKiB: g.def.memoryKiB,
      persistent: true,
      autostart: g.def.autostart,
      hasSavedImage,
      policy: g.def.policy,
      saveBlockers,
    };
  };

  /** The running guest's pid, or a refusal naming its state. */
  const requireActive = async (g: GuestFiles, signal: AbortSignal, what: string): Promise<number> => {
    const p = await probe(g, signal);
    if (p.pid === undefined) throw new OperationRefusedError(`cannot ${what} ${g.def.name}: it is not running (${p.detail})`, { guest: g.def.name });
    return p.pid;
  };

  const withMonitor = <T>(g: GuestFiles, signal: AbortSignal, body: (qmp: QmpClient) => Promise<T>): Promise<T> =>
    pool.with(g.def.name, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs }, body);

  return {
    kind: 'qmp',
    uri,
    saveDirectory: opts.saveDir,

    async listGuests({ signal }: OpOptions): Promise<Guest[]> {
      await ensureDirs();
      const defs: QmpGuestDefinition[] = [];
      for (const file of await listDefinitionFiles(opts.guestsDir)) {
        try {
          defs.push(await loadDefinition(file));
        } catch (err) {
          opts.log?.error(`${errorMessage(err)} (guest left out)`);
        }
      }
      if (signal.aborted) throw abortError(signal, 'listing qmp guests');
      // In parallel: a monitor held by another client costs its connect deadline once, not once per guest.
      return Promise.all(defs.map((def) => describe(filesOf(def), signal)));
    },

    async getGuest(id: string, { signal }: OpOptions): Promise<Guest> {
      return describe(await load(id), signal);
    },

    async save(id: string, sopts: SaveOptions): Promise<void> {
      const g = await load(id);
      if (g.def.saveBlockers.length > 0) {
        throw new OperationRefusedError(`cannot save ${id}: ${g.def.saveBlockers.join(', ')}`, { guest: id });
      }
      if (saves.has(id)) throw new OperationRefusedError(`cannot save ${id}: a save is already running`, { guest: id });
      // Registered before the first await, so a second save or an abort sees it at once.
      const ac = new AbortController();
      let settle: () => void = () => undefined;
      const entry = { ac, done: new Promise<void>((resolve) => (settle = resolve)) };
      saves.set(id, entry);
      const onAbort = (): void => ac.abort(sopts.signal.reason);
      if (sopts.signal.aborted) onAbort();
      else sopts.signal.addEventListener('abort', onAbort, { once: true });
      try {
        const pid = await requireActive(g, ac.signal, 'save');
        await saveGuest(ctx, g, pid, { ...sopts, signal: ac.signal });
      } finally {
        sopts.signal.removeEventListener('abort', onAbort);
        if (saves.get(id) === entry) saves.delete(id);
        settle();
      }
    },

    async abort(id: string, { signal }: OpOptions): Promise<void> {
      const s = saves.get(id);
      if (!s) return;
      s.ac.abort(new Error(`save of ${id} aborted`));
      const d = deadline(ctx.qemuTimeoutMs * 3, signal);
      const cutOff = new Promise<'cut'>((resolve) => d.signal.addEventListener('abort', () => resolve('cut'), { once: true }));
      const how = await Promise.race([s.done.then(() => 'done' as const), cutOff]);
      d.clear();
      if (signal.aborted) throw abortError(signal, `aborting the save of ${id}`, id);
      if (how === 'cut') opts.log?.warn(`${id}: the aborted save did not finish within its deadline`);
    },

    async start(id: string, stopts: StartOptions): Promise<void> {
      if (starting.has(id)) throw new OperationRefusedError(`cannot start ${id}: it is being started already`, { guest: id });
      starting.add(id);
      try {
        const g = await load(id);
        const p = await checkProcess(g.run);
        if (p.alive) throw new OperationRefusedError(`cannot start ${id}: it is already running (pid ${p.pid})`, { guest: id });
        await startGuest(ctx, g, stopts);
      } finally {
        starting.delete(id);
      }
    },

    async shutdown(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      await requireActive(g, signal, 'shut down');
      await withMonitor(g, signal, (qmp) => qmpCommand(ctx, qmp, 'system_powerdown', undefined, signal));
    },

    async resume(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      await requireActive(g, signal, 'resume');
      await withMonitor(g, signal, (qmp) => qmpCommand(ctx, qmp, 'cont', undefined, signal));
    },

    async reboot(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      await requireActive(g, signal, 'reboot');
      await withMonitor(g, signal, async (qmp) => {
        const resets = qmp.listen('RESET');
        try {
          await qmpCommand(ctx, qmp, 'system_reset', undefined, signal);
          await resets.next({ signal });
        } finally {
          resets.unsubscribe();
        }
        const st = await qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal);
        if (!st.running && st.status !== 'paused') throw new OperationRefusedError(`rebooted ${id}, but it is ${st.status}`, { guest: id });
      });
    },

    async destroy(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      const proc = await checkProcess(g.run);
      if (!proc.alive || proc.pid === undefined) return;
      const pid = proc.pid;
      let lease: Awaited<ReturnType<MonitorPool['acquire']>> | undefined;
      const d = deadline(Math.min(ctx.qemuTimeoutMs, 3000), signal);
      try {
        lease = await pool.acquire(id, g.run.qmp, { signal: d.signal, connectMs: Math.min(ctx.qemuTimeoutMs, 3000) });
      } catch (err) {
        opts.log?.debug(`${id}: no monitor for quit (${errorMessage(err)}); killing the process`);
      } finally {
        d.clear();
      }
      try {
        await quitAndReap(ctx, lease?.qmp, id, pid, g.run.qmp);
      } finally {
        await lease?.release();
      }
      emit(id, 'Stopped', 'Destroyed');
    },

    async waitForState(id: string, states: readonly GuestState[], { signal }: OpOptions): Promise<GuestState> {
      const g = await load(id);
      for (;;) {
        const p = await probe(g, signal);
        if (states.includes(p.state)) return p.state;
        try {
          await sleep(STATE_POLL_MS, signal);
        } catch {
          throw abortError(signal, `waiting for ${id} to be ${states.join(' or ')}`, id);
        }
      }
    },

    onLifecycle(listener: (event: LifecycleEvent) => void): () => void {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async close(): Promise<void> {
      for (const s of saves.values()) s.ac.abort(new Error('driver closing'));
      await Promise.all([...saves.values()].map((s) => s.done));
      await pool.closeAll();
    },
  };
}
