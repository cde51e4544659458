// Saving a QMP guest: stop it, migrate its state into a unix socket we listen
// on, write the stream to a temp file. Until QEMU says `completed` an abort or
// a failure cancels the migration, resumes the guest if it ran and removes the
// partial file. From `completed` on the guest's state is in the file: the save
// is finished whatever the caller's signal says (the rest of the stream
// written, fsync, rename into place, fsync of the directory, `quit`), each
// file-system step within its own deadline. Only an image that is not whole
// (a write of the stream failed) or not in place (its rename failed) is given
// up: then the guest is resumed, as before the save. An fsync that fails or
// does not return keeps the image (the guest is quit, never resumed: it must
// not run on while an image of it may be restored) and is reported as an error
// naming the file.
import type { FileHandle } from 'node:fs/promises';
import { rename } from 'node:fs/promises';
import { anySignal, deadline } from '../../util/deadline.js';
import { InterruptedError, OperationRefusedError, TimedOutError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { SaveOptions } from '../types.js';
import { abortError } from '../../qmp/abort.js';
import { nextMigrationStatus, qmpCommand, type DriverContext, type GuestFiles, type QmpStatus, type QueryMigrate } from './driver-context.js';
import { withFsDeadline } from './fs-deadline.js';
import { receiveMigration, type MigrationReceiver } from './migration-stream.js';
import { createExclusive, fsyncDir } from './private-dir.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import type { QmpEventListener } from '../../qmp/qmp-events.js';
import { isOurQemu, signalQemu } from './qemu-process.js';
import { stopProcess } from '../../proc/stop.js';
import type { SaveInFlight } from './save-in-flight.js';
import { hasImage, hasRestoringMarker, removeIfExists, removeStalePartials, writeSidecar } from './saved-image.js';

/** Bandwidth for a save: the default 128 MiB/s would throttle even a stopped guest. */
export const SAVE_MAX_BANDWIDTH = 64 * 1024 * 1024 * 1024;
const ACTIVE_MIGRATION = new Set(['setup', 'active', 'device', 'pre-switchover', 'cancelling', 'postcopy-active', 'wait-unplug']);

/** What a capture leaves for the finish: the stream's file, its receiver, the migration's events. */
interface Captured {
  temp: string;
  fh: FileHandle;
  receiver: MigrationReceiver;
  migration: QmpEventListener;
  wasRunning: boolean;
  hadImage: boolean;
}

/**
 * Save guest `g` (QEMU pid `pid`) to its image; resolves when the image is in
 * place and QEMU has exited. `flight.signal` aborts the capture only (see the
 * rule above).
 */
export async function saveGuest(ctx: DriverContext, g: GuestFiles, pid: number, flight: SaveInFlight, onProgress?: SaveOptions['onProgress']): Promise<void> {
  const name = g.def.name;
  const signal = flight.signal;
  if (signal.aborted) throw abortError(signal, `saving ${name}`, name);
  const lease = await ctx.pool.acquire(name, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs });
  let kept = false;
  try {
    const c = await capture(ctx, g, lease.qmp, signal, onProgress);
    flight.finishing();
    onProgress?.({ fraction: 1 });
    await finish(ctx, g, lease.qmp, c);
    kept = true;
    // The image is complete and in place: from here on the guest is quit.
    await quitAndReap(ctx, lease.qmp, name, pid, g.run.qmp);
  } finally {
    await lease.release();
  }
  if (kept) ctx.emit(name, 'Stopped', 'Saved');
}

/** Everything up to MIGRATION `completed`; on failure or abort the save is rolled back (guest resumed, partial file removed). */
async function capture(ctx: DriverContext, g: GuestFiles, qmp: QmpClient, signal: AbortSignal, onProgress: SaveOptions['onProgress']): Promise<Captured> {
  const name = g.def.name;
  let wasRunning = false;
  let hadImage = false;
  let temp: string | undefined;
  let fh: FileHandle | undefined;
  let migration: QmpEventListener | undefined;
  let receiver: MigrationReceiver | undefined;
  try {
    const status = await qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal);
    if (status.status !== 'running' && status.status !== 'paused' && status.status !== 'suspended') {
      throw new OperationRefusedError(`cannot save ${name}: it is ${status.status}`, { guest: name });
    }
    wasRunning = status.running;
    // It runs, so it has run from an image a crashed restore left marked: that one has served.
    if (await hasRestoringMarker(g.saved)) {
      await removeIfExists(g.saved.restoring).catch((err: unknown) => ctx.log?.warn(`${name}: ${errorMessage(err)}`));
    }
    hadImage = await hasImage(g.saved);
    if (!hadImage) await writeSidecar(g.saved, { version: 1, name, wasRunning, savedAt: Date.now() });
    if (wasRunning) {
      await qmpCommand(ctx, qmp, 'stop', undefined, signal);
    }
    await qmpCommand(ctx, qmp, 'migrate-set-parameters', { 'max-bandwidth': ctx.saveBandwidth }, signal);
    await qmpCommand(ctx, qmp, 'migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }, signal);
    await removeStalePartials(g.saved);
    temp = g.saved.temp();
    fh = await withFsDeadline(createExclusive(temp), `creating ${temp}`, ctx.fsCallMs, name);
    receiver = await receiveMigration(g.run.saveSocket, fh, signal);
    migration = qmp.listen('MIGRATION');
    await qmpCommand(ctx, qmp, 'migrate', { uri: `unix:${g.run.saveSocket}` }, signal);
    // A broken stream (disk full...) ends the wait at once, with its own error.
    const broken = new AbortController();
    receiver.done.catch((err: unknown) => broken.abort(err));
    const both = anySignal(signal, broken.signal);
    try {
      await waitForMigration(ctx, qmp, migration, name, both.signal, onProgress);
    } catch (err) {
      if (broken.signal.aborted && !signal.aborted) throw broken.signal.reason;
      throw err;
    } finally {
      both.clear();
    }
    return { temp, fh, receiver, migration, wasRunning, hadImage };
  } catch (err) {
    const cause = signal.aborted ? abortError(signal, `saving ${name}`, name) : err;
    await giveUp(ctx, g, qmp, { wasRunning, migrating: migration !== undefined, temp, fh, receiver, migration });
    throw cause;
  }
}

/** From `completed`: write the rest, fsync, rename into place, fsync the directory; never aborted by the caller. */
async function finish(ctx: DriverContext, g: GuestFiles, qmp: QmpClient, c: Captured): Promise<void> {
  const name = g.def.name;
  const sync = ctx.hooks.syncImage ?? ((fh: FileHandle) => fh.sync());
  const problems: string[] = [];
  let fhOpen = true;
  try {
    try {
      await withFsDeadline(c.receiver.done, `writing the migration stream to ${c.temp}`, ctx.fsSyncMs, name);
    } catch (err) {
      // Not all of the state reached the file: the image is not whole, the guest runs on.
      throw new OperationRefusedError(`saving ${name}: QEMU sent its whole state, but ${errorMessage(err)}`, { cause: err, guest: name });
    }
    try {
      await withFsDeadline(sync(c.fh), `fsync of ${c.temp}`, ctx.fsSyncMs, name);
    } catch (err) {
      problems.push(`the fsync of the image failed (${errorMessage(err)})`);
    }
    fhOpen = false;
    await withFsDeadline(c.fh.close(), `closing ${c.temp}`, ctx.fsCallMs, name).catch((err: unknown) => problems.push(`closing it failed (${errorMessage(err)})`));
    if (c.hadImage) {
      await writeSidecar(g.saved, { version: 1, name, wasRunning: c.wasRunning, savedAt: Date.now() }).catch((err: unknown) => problems.push(`its sidecar ${g.saved.sidecar} was not updated (${errorMessage(err)})`));
    }
    try {
      await withFsDeadline(rename(c.temp, g.saved.image), `renaming ${c.temp} to ${g.saved.image}`, ctx.fsCallMs, name);
    } catch (err) {
      if (!(err instanceof TimedOutError)) {
        throw new OperationRefusedError(`saving ${name}: ${c.temp} could not be renamed to ${g.saved.image}: ${errorMessage(err)}`, { cause: err, guest: name });
      }
      // The rename may still happen: the guest must not run on. It is quit, its state in one of the two names.
      problems.push(`${errorMessage(err)} (the state is in ${c.temp} or ${g.saved.image})`);
      c.temp = '';
    }
    await withFsDeadline(fsyncDir(g.saved.dir), `fsync of ${g.saved.dir}`, ctx.fsCallMs, name).catch((err: unknown) => problems.push(`the fsync of ${g.saved.dir} failed (${errorMessage(err)})`));
  } catch (err) {
    if (fhOpen) await withFsDeadline(c.fh.close(), `closing ${c.temp}`, ctx.fsCallMs, name).catch(() => undefined);
    await giveUp(ctx, g, qmp, { wasRunning: c.wasRunning, migrating: true, temp: c.temp, receiver: c.receiver, migration: c.migration });
    throw err;
  } finally {
    c.migration.unsubscribe();
    await c.receiver.close();
  }
  if (problems.length > 0) {
    ctx.log?.error(`${name}: saved to ${g.saved.image} and QEMU quit, but ${problems.join('; ')}: the image is kept and will be restored; after a crash of the host it may be incomplete`);
  }
}

/** Roll a save back: cancel the migration, resume the guest if it ran, remove the partial file (and the sidecar of a first image). */
async function giveUp(
  ctx: DriverContext,
  g: GuestFiles,
  qmp: QmpClient,
  s: { wasRunning: boolean; migrating: boolean; temp?: string | undefined; fh?: FileHandle | undefined; receiver?: MigrationReceiver | undefined; migration?: QmpEventListener | undefined },
): Promise<void> {
  const name = g.def.name;
  try {
    await rollBack(ctx, qmp, name, s);
  } finally {
    s.migration?.unsubscribe();
    await s.receiver?.close();
    if (s.fh) await withFsDeadline(s.fh.close(), `closing ${s.temp ?? 'the image'}`, ctx.fsCallMs, name).catch(() => undefined);
    if (s.temp) await removeIfExists(s.temp).catch((err: unknown) => ctx.log?.warn(`${name}: ${errorMessage(err)}`));
    if (!(await hasImage(g.saved).catch(() => true))) await removeIfExists(g.saved.sidecar).catch(() => undefined);
  }
}

/** Wait for MIGRATION `completed`, reporting progress from query-migrate; failed/cancelled rejects. */
async function waitForMigration(ctx: DriverContext, qmp: QmpClient, events: QmpEventListener, name: string, signal: AbortSignal, onProgress: SaveOptions['onProgress']): Promise<void> {
  for (;;) {
    let { status, info } = await nextMigrationStatus(ctx, qmp, events, signal);
    if (status === 'cancelled') throw new InterruptedError(`saving ${name}: migration cancelled`, { guest: name });
    if (status !== 'completed' && status !== 'failed' && !info) continue;
    info ??= await qmpCommand<QueryMigrate>(ctx, qmp, 'query-migrate', undefined, signal);
    const total = info.ram?.total ?? 0;
    const remaining = info.ram?.remaining ?? 0;
    // Completed: the caller reports the end, once the save can no longer be aborted.
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new OperationRefusedError(`saving ${name}: migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`, { guest: name });
    }
    // Below 1 until `completed`: a fraction of 1 means the save can no longer be aborted (all RAM sent is not yet the end).
    if (total > 0) onProgress?.({ fraction: Math.min(0.999, Math.max(0, (total - remaining) / total)), processedBytes: total - remaining, totalBytes: total });
  }
}

/** Cancel a migration and resume the guest if it ran; never throws unless the guest could not be resumed. */
async function rollBack(ctx: DriverContext, qmp: QmpClient, name: string, s: { wasRunning: boolean; migrating: boolean }): Promise<void> {
  if (qmp.state !== 'running') {
    ctx.log?.warn(`${name}: the monitor closed during the save; cannot roll back through it`);
    return;
  }
  const d = deadline(ctx.qemuTimeoutMs * 2);
  try {
    if (s.migrating) {
      await qmp.execute('migrate_cancel', undefined, { signal: d.signal }).catch((err: unknown) => ctx.log?.warn(`${name}: migrate_cancel: ${errorMessage(err)}`));
      for (;;) {
        const info = await qmp.execute<QueryMigrate>('query-migrate', undefined, { signal: d.signal });
        if (!info.status || !ACTIVE_MIGRATION.has(info.status)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (s.wasRunning) {
      await qmp.execute('cont', undefined, { signal: d.signal });
    }
  } catch (err) {
    if (s.wasRunning) throw new OperationRefusedError(`saving ${name} failed, and resuming it failed too (it may be left paused): ${errorMessage(err)}`, { cause: err, guest: name });
  } finally {
    d.clear();
  }
}

/** `quit` QEMU (SIGTERM, QEMU's own clean quit, when the monitor is not usable) and wait for the process to go; SIGKILL the checked pid when it does not. */
export async function quitAndReap(ctx: DriverContext, qmp: QmpClient | undefined, name: string, pid: number, qmpPath: string): Promise<void> {
  const r = await stopProcess(pid, {
    isOurs: () => isOurQemu(pid, qmpPath),
    ask: async () => {
      if (qmp && qmp.state === 'running') {
        const d = deadline(ctx.qemuTimeoutMs);
        try {
          await qmp.execute('quit', undefined, { signal: d.signal });
          return true;
        } catch (err) {
          ctx.log?.debug(`${name}: quit: ${errorMessage(err)}`);
        } finally {
          d.clear();
        }
      }
      return signalQemu(pid, qmpPath, 'SIGTERM');
    },
    graceMs: ctx.qemuTimeoutMs,
    unaskedGraceMs: Math.min(ctx.qemuTimeoutMs, 3000),
    killWaitMs: ctx.qemuTimeoutMs,
    pollMs: 50,
    onKill: () => ctx.log?.warn(`${name}: QEMU (pid ${pid}) did not exit when asked to; killing it`),
  });
  if (r.result === 'survived' || r.result === 'failed') {
    throw new OperationRefusedError(`${name}: QEMU (pid ${pid}) survived SIGKILL`, { guest: name });
  }
}
