// The QMP driver: QEMU guests defined in QEMU_GUESTS_DIR/NAME.json, run by
// QEMU directly (daemonized, a QMP socket and pidfile under our runtime
// directory), saved to and restored from our save directory.
import { join } from 'node:path';
import type { Log } from '../../util/log.js';
import { deadline, sleep } from '../../util/deadline.js';
import { GuestNotFoundError, isDomainError, OperationRefusedError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { DomainDriver, Guest, GuestState, LifecycleEvent, OpOptions, SaveOptions, StartOptions } from '../types.js';
import { abortError } from '../../qmp/abort.js';
import { qmpCommand, stateOfRunState, type DriverContext, type GuestFiles, type QmpDriverHooks, type QmpStatus } from './driver-context.js';
import { FS_CALL_MS, FS_SYNC_MS, withFsDeadline } from './fs-deadline.js';
import { checkGuestName, definitionName, GuestDefinitionError, listDefinitionFiles, loadDefinition, type QmpGuestDefinition } from './guest-definition.js';
import { MonitorPool } from './monitor-pool.js';
import { findOrphanQemus, orphanGuestFiles, runsFromRunDir } from './orphan-qemu.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import { ensurePrivateDir } from './private-dir.js';
import { startGuest } from './qmp-restore.js';
import { quitAndReap, saveGuest, SAVE_MAX_BANDWIDTH } from './qmp-save.js';
import { checkProcess, runtimePaths, signalQemu } from './qemu-process.js';
import { imageIdentity, savedImagePaths } from './saved-image.js';
import { isStaleBeside, StaleImages } from './stale-image.js';
import { SavesInFlight } from './save-in-flight.js';
import { EXIT_GRACE_MS, ShutdownWatches } from './shutdown-watch.js';
import { StartsInFlight } from './start-in-flight.js';

export { EXIT_GRACE_MS, SHUTDOWN_HOLD_MS } from './shutdown-watch.js';

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
  /** Deadline of one file-system call, ms (default FS_CALL_MS). */
  fsCallMs?: number;
  /** Deadline of a save's last write and fsync, ms (default FS_SYNC_MS). */
  fsSyncMs?: number;
  /** Test seams. */
  hooks?: QmpDriverHooks;
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
  const saves = new SavesInFlight();
  const starts = new StartsInFlight();
  const watches = new ShutdownWatches();
  const pool = new MonitorPool((guest, e) => {
    if (e.event === 'SHUTDOWN' && e.data['guest'] === true) watches.guestShutDown(guest, performance.now());
    if (e.event === 'SHUTDOWN') emit(guest, 'Shutdown', String(e.data['reason'] ?? ''), e.timestamp);
    else if (e.event === 'STOP') emit(guest, 'Suspended', 'Paused', e.timestamp);
    else if (e.event === 'RESUME') emit(guest, 'Resumed', 'Unpaused', e.timestamp);
    else if (e.event === 'RESET') emit(guest, 'Rebooted', e.data['guest'] === true ? 'guest' : 'host', e.timestamp);
  });
  const ctx: DriverContext = {
    pool,
    qemuTimeoutMs: opts.qemuTimeoutMs ?? 10_000,
    saveBandwidth: opts.saveBandwidth ?? SAVE_MAX_BANDWIDTH,
    fsCallMs: opts.fsCallMs ?? FS_CALL_MS,
    fsSyncMs: opts.fsSyncMs ?? FS_SYNC_MS,
    hooks: opts.hooks ?? {},
    log: opts.log,
    emit,
  };
  const staleImages = new StaleImages(ctx);
  const uri = `qmp://${opts.guestsDir}`;
  let dirsReady: Promise<void> | undefined;

  const ensureDirs = (): Promise<void> => {
    dirsReady ??= Promise.all([opts.runDir, opts.saveDir].map((dir) => withFsDeadline(ensurePrivateDir(dir), `preparing ${dir}`, ctx.fsCallMs))).then(() => undefined);
    dirsReady.catch(() => (dirsReady = undefined));
    return dirsReady;
  };

  const filesOf = (def: QmpGuestDefinition): GuestFiles => ({
    def,
    run: runtimePaths(opts.runDir, def.name),
    saved: savedImagePaths(opts.saveDir, def.name),
  });

  const definitionFiles = (): Promise<string[]> => withFsDeadline(listDefinitionFiles(opts.guestsDir), `reading ${opts.guestsDir}`, ctx.fsCallMs);

  const load = async (id: string): Promise<GuestFiles> => {
    await ensureDirs();
    const bad = checkGuestName(id);
    if (bad) throw new GuestNotFoundError(`no qmp guest ${JSON.stringify(id)}: ${bad}`, { guest: id });
    const file = join(opts.guestsDir, `${id}.json`);
    try {
      const files = await definitionFiles();
      if (!files.includes(file)) throw new GuestNotFoundError(`no qmp guest ${id} (no ${file})`, { guest: id });
      return filesOf(await withFsDeadline(loadDefinition(file), `reading ${file}`, ctx.fsCallMs));
    } catch (err) {
      if ((err instanceof GuestDefinitionError || isDomainError(err, 'not-found')) && (await runsFromRunDir(opts.runDir, id))) return orphanGuestFiles(opts, id, errorMessage(err));
      throw err;
    }
  };


  /** The guest's process (pid when alive) and QEMU's run state. */
  const probe = async (g: GuestFiles, signal: AbortSignal): Promise<{ pid: number | undefined; state: GuestState; detail: string }> => {
    let proc: Awaited<ReturnType<typeof checkProcess>>;
    try {
      proc = await checkProcess(g.run);
    } catch (err) {
      return { pid: undefined, state: 'other', detail: `cannot check the process: ${errorMessage(err)}` };
    }
    // No pidfile is the ordinary shut-off guest: only an odd one (stale pidfile, exited process) gets a reason.
    if (!proc.alive || proc.pid === undefined) return { pid: undefined, state: 'shutoff', detail: proc.detail === 'no pidfile' ? 'shut off' : `shut off (${proc.detail})` };
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

  /** Whether the guest's QEMU runs, from its process alone (no QMP): `running` stands for any live state. */
  const processState = async (g: GuestFiles): Promise<{ pid: number | undefined; state: GuestState }> => {
    const proc = await checkProcess(g.run).catch(() => undefined);
    if (!proc) return { pid: undefined, state: 'other' };
    return proc.alive && proc.pid !== undefined ? { pid: proc.pid, state: 'running' } : { pid: undefined, state: 'shutoff' };
  };

  const describe = async (g: GuestFiles, signal: AbortSignal): Promise<Guest> => {
    const p = await probe(g, signal);
    let savedImageId: string | undefined;
    const saveBlockers = [...g.def.saveBlockers];
    try {
      savedImageId = await imageIdentity(g.saved);
    } catch (err) {
      saveBlockers.push(`unusable save path: ${errorMessage(err)}`);
    }
    const problems = g.problem === undefined ? [] : [g.problem];
    // Only said here (a listing changes nothing on disk): the operations that end its run move it aside.
    const stale = savedImageId !== undefined && p.pid !== undefined && (await isStaleBeside(p.pid, p.detail));
    if (stale) {
      staleImages.remember(g, savedImageId);
      problems.push(`${g.saved.image} is older than the running guest (its QEMU, pid ${p.pid}, has run without being restored from it): never restored; set aside when the guest is saved, shut down or destroyed`);
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
      hasSavedImage: savedImageId !== undefined,
      ...(savedImageId === undefined ? {} : { savedImageId }),
      ...(stale ? { staleImage: g.saved.image } : {}),
      policy: g.def.policy,
      saveBlockers,
      ...(problems.length === 0 ? {} : { problem: problems.join('; ') }),
    };
  };

  /** The running guest's pid and run state, or a refusal naming its state. */
  const requireLive = async (g: GuestFiles, signal: AbortSignal, what: string): Promise<{ pid: number; status: string }> => {
    const p = await probe(g, signal);
    if (p.pid === undefined) throw new OperationRefusedError(`cannot ${what} ${g.def.name}: it is not running (${p.detail})`, { guest: g.def.name });
    return { pid: p.pid, status: p.detail };
  };
  /** The running guest's pid, or a refusal naming its state. */
  const requireActive = async (g: GuestFiles, signal: AbortSignal, what: string): Promise<number> => (await requireLive(g, signal, what)).pid;

  /** QEMU's run state within a short deadline, or undefined when it does not answer (destroy goes on without it). */
  const runState = async (qmp: QmpClient, pid: number, signal: AbortSignal): Promise<{ pid: number; status: string } | undefined> => {
    const d = deadline(Math.min(ctx.qemuTimeoutMs, 3000), signal);
    try {
      return { pid, status: (await qmp.execute<QmpStatus>('query-status', undefined, { signal: d.signal })).status };
    } catch {
      return undefined;
    } finally {
      d.clear();
    }
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
      const broken = new Map<string, string>();
      for (const file of await definitionFiles()) {
        try {
          defs.push(await withFsDeadline(loadDefinition(file), `reading ${file}`, ctx.fsCallMs));
        } catch (err) {
          broken.set(definitionName(file), errorMessage(err));
          opts.log?.error(`${errorMessage(err)} (guest left out unless its QEMU runs)`);
        }
      }
      if (signal.aborted) throw abortError(signal, 'listing qmp guests');
      const orphans = await findOrphanQemus(opts, new Set(defs.map((d) => d.name)), broken, ctx.fsCallMs);
      // In parallel: a monitor held by another client costs its connect deadline once, not once per guest.
      return Promise.all([...defs.map(filesOf), ...orphans].map((g) => describe(g, signal)));
    },

    async getGuest(id: string, { signal }: OpOptions): Promise<Guest> {
      return describe(await load(id), signal);
    },

    async save(id: string, sopts: SaveOptions): Promise<void> {
      const g = await load(id);
      if (g.def.saveBlockers.length > 0) {
        throw new OperationRefusedError(`cannot save ${id}: ${g.def.saveBlockers.join(', ')}`, { guest: id });
      }
      const { save, done } = saves.begin(id, sopts.signal);
      try {
        const live = await requireLive(g, save.signal, 'save');
        // An older image is set aside first: should the save fail, none is left to be restored.
        await staleImages.setAside(g, live, 'before its save');
        await saveGuest(ctx, g, live.pid, save, sopts.onProgress);
      } finally {
        done();
      }
    },

    async abort(id: string, { signal }: OpOptions): Promise<void> {
      const s = saves.get(id);
      if (!s) return;
      s.abort(new Error(`save of ${id} aborted`));
      // A rollback is bounded by its commands; a save past `completed` is finished, within the caller's signal.
      const how = await s.waitEnded(s.phase === 'finishing' ? Infinity : ctx.qemuTimeoutMs * 3, signal);
      if (signal.aborted) throw abortError(signal, `aborting the save of ${id}`, id);
      if (how === 'cut') opts.log?.warn(`${id}: the aborted save did not finish within its deadline`);
    },

    async start(id: string, stopts: StartOptions): Promise<void> {
      await starts.run(id, async () => {
        const g = await load(id);
        const p = await checkProcess(g.run);
        if (p.alive) throw new OperationRefusedError(`cannot start ${id}: it is already running (pid ${p.pid})`, { guest: id });
        watches.forget(id);
        // One this process found stale while the guest ran (it has gone off since): never restored.
        await staleImages.setAside(g, undefined, 'before its start');
        await startGuest(ctx, g, stopts);
      });
    },

    async shutdown(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      // A guest that is not running is refused (by requireActive) before any connection is tried.
      if (!(await processState(g)).pid) await requireActive(g, signal, 'shut down');
      // One connection from before the press until QEMU exits (see SHUTDOWN_HOLD_MS).
      const lease = await pool.acquire(id, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs });
      let kept = false;
      try {
        const live = await requireLive(g, signal, 'shut down');
        await staleImages.setAside(g, live, 'before its shutdown');
        await qmpCommand(ctx, lease.qmp, 'system_powerdown', undefined, signal);
        watches.hold(id, lease);
        kept = true;
      } finally {
        if (!kept) await lease.release();
      }
    },

    async resume(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      await requireActive(g, signal, 'resume');
      await withMonitor(g, signal, (qmp) => qmpCommand(ctx, qmp, 'cont', undefined, signal));
    },

    async wake(id: string, { signal }: OpOptions): Promise<void> {
      const g = await load(id);
      await requireActive(g, signal, 'wake');
      await withMonitor(g, signal, (qmp) => qmpCommand(ctx, qmp, 'system_wakeup', undefined, signal));
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
      // A save past `completed` quits the guest itself once its image is in place: let it, within the signal.
      const finishing = saves.get(id);
      if (finishing?.phase === 'finishing') await finishing.waitEnded(Infinity, signal);
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
        await staleImages.setAside(g, lease ? () => runState(lease!.qmp, pid, signal) : undefined, 'before it is destroyed');
        await quitAndReap(ctx, lease?.qmp, id, pid, g.run.qmp);
      } finally {
        await lease?.release();
      }
      emit(id, 'Stopped', 'Destroyed');
    },

    async waitForState(id: string, states: readonly GuestState[], { signal }: OpOptions): Promise<GuestState> {
      // A guest whose definition broke while it ran is loaded from its run directory only while its QEMU runs
      // (load): once that QEMU has exited, which a wait for shutoff waits for, its run and save paths are still
      // the orphan's, and it is off, not unknown.
      const g = await load(id).catch((err: unknown) => {
        if (err instanceof GuestDefinitionError && states.includes('shutoff')) return orphanGuestFiles(opts, id, errorMessage(err));
        throw err;
      });
      // Waiting for the guest to go off asks QEMU nothing: a QMP command in flight as
      // QEMU exits can hang it (see EXIT_GRACE_MS). An idle connection is held for the
      // guest's SHUTDOWN event, and the process is watched.
      const offOnly = states.every((s) => s === 'shutoff');
      // It takes over the connection a shutdown held (the same one: the pool shares it), and lets it go when done.
      const lease = offOnly
        ? pool.acquire(id, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs }).then(
            (l) => (watches.letGo(id), l),
            () => undefined,
          )
        : undefined;
      try {
        for (;;) {
          const p = offOnly ? await processState(g) : await probe(g, signal);
          if (states.includes(p.state)) {
            // Off by itself: an image this process found stale while it ran is set aside now.
            if (p.state === 'shutoff') await staleImages.setAside(g, undefined, 'as the guest went off');
            return p.state;
          }
          const downAt = watches.guestDownAt(id);
          if (p.pid !== undefined && downAt !== undefined && performance.now() - downAt > EXIT_GRACE_MS) {
            opts.log?.warn(`${id}: the guest shut down ${Math.round((performance.now() - downAt) / 1000)} s ago, but QEMU (pid ${p.pid}) has not exited; killing it`);
            watches.forget(id);
            await signalQemu(p.pid, g.run.qmp, 'SIGKILL');
            continue;
          }
          try {
            await sleep(STATE_POLL_MS, signal);
          } catch {
            throw abortError(signal, `waiting for ${id} to be ${states.join(' or ')}`, id);
          }
        }
      } finally {
        void lease?.then((l) => l?.release());
      }
    },

    onLifecycle(listener: (event: LifecycleEvent) => void): () => void {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async close(): Promise<void> {
      // Saves still capturing roll back; saves past `completed` finish. Either way within a deadline.
      const inFlight = saves.all();
      for (const s of inFlight) s.abort(new Error('driver closing'));
      const closeMs = ctx.fsSyncMs + ctx.fsCallMs * 4 + ctx.qemuTimeoutMs * 3;
      const cut = (await Promise.all(inFlight.map(async (s) => ((await s.waitEnded(closeMs)) === 'cut' ? s.guest : undefined)))).filter((n) => n !== undefined);
      if (cut.length > 0) opts.log?.error(`closing the qmp driver: the save of ${cut.join(', ')} did not end within ${Math.round(closeMs / 1000)} s; left as it is`);
      watches.letGoAll();
      await pool.closeAll();
    },
  };
}
