// Saving a QMP guest: stop it, migrate its state into a unix socket we listen
// on, write the stream to a temp file, fsync, rename it into place only on
// MIGRATION `completed`, then quit QEMU. On failure or abort the migration is
// cancelled, the guest resumed if it ran, and the partial file removed.
import { rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { anySignal, deadline } from '../../util/deadline.js';
import { InterruptedError, OperationRefusedError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { SaveOptions } from '../types.js';
import { abortError } from '../../qmp/abort.js';
import { nextMigrationStatus, qmpCommand, type DriverContext, type GuestFiles, type QmpStatus, type QueryMigrate } from './driver-context.js';
import { receiveMigration } from './migration-stream.js';
import { createExclusive, fsyncDir } from './private-dir.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import type { QmpEventListener } from '../../qmp/qmp-events.js';
import { isOurQemu, signalQemu } from './qemu-process.js';
import { stopProcess } from '../../proc/stop.js';
import { hasImage, removeIfExists, removeStalePartials, writeSidecar } from './saved-image.js';

/** Bandwidth for a save: the default 128 MiB/s would throttle even a stopped guest. */
export const SAVE_MAX_BANDWIDTH = 64 * 1024 * 1024 * 1024;
const ACTIVE_MIGRATION = new Set(['setup', 'active', 'device', 'pre-switchover', 'cancelling', 'postcopy-active', 'wait-unplug']);

/** Save guest `g` (QEMU pid `pid`) to its image; resolves when the image is complete and QEMU has exited. */
export async function saveGuest(ctx: DriverContext, g: GuestFiles, pid: number, opts: SaveOptions): Promise<void> {
  const name = g.def.name;
  const { signal } = opts;
  if (signal.aborted) throw abortError(signal, `saving ${name}`, name);
  const lease = await ctx.pool.acquire(name, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs });
  const qmp = lease.qmp;
  let wasRunning = false;
  let temp: string | undefined;
  let migration: QmpEventListener | undefined;
  let receiver: Awaited<ReturnType<typeof receiveMigration>> | undefined;
  let completed = false;
  try {
    const status = await qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal);
    if (status.status !== 'running' && status.status !== 'paused' && status.status !== 'suspended') {
      throw new OperationRefusedError(`cannot save ${name}: it is ${status.status}`, { guest: name });
    }
    wasRunning = status.running;
    const hadImage = await hasImage(g.saved);
    if (!hadImage) await writeSidecar(g.saved, { version: 1, name, wasRunning, savedAt: Date.now() });
    if (wasRunning) {
      await qmpCommand(ctx, qmp, 'stop', undefined, signal);
    }
    await qmpCommand(ctx, qmp, 'migrate-set-parameters', { 'max-bandwidth': ctx.saveBandwidth }, signal);
    await qmpCommand(ctx, qmp, 'migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }, signal);
    await removeStalePartials(g.saved);
    temp = g.saved.temp();
    const fh = await createExclusive(temp);
    try {
      receiver = await receiveMigration(g.run.saveSocket, fh, signal);
      migration = qmp.listen('MIGRATION');
      await qmpCommand(ctx, qmp, 'migrate', { uri: `unix:${g.run.saveSocket}` }, signal);
      // A broken stream (disk full...) ends the wait at once, with its own error.
      const broken = new AbortController();
      receiver.done.catch((err: unknown) => broken.abort(err));
      const both = anySignal(signal, broken.signal);
      try {
        await waitForMigration(ctx, qmp, migration, name, both.signal, opts.onProgress);
      } catch (err) {
        if (broken.signal.aborted && !signal.aborted) throw broken.signal.reason;
        throw err;
      } finally {
        both.clear();
      }
      await receiver.done;
    } finally {
      await fh.close();
    }
    if (hadImage) await writeSidecar(g.saved, { version: 1, name, wasRunning, savedAt: Date.now() });
    await rename(temp, g.saved.image);
    temp = undefined;
    await fsyncDir(dirname(g.saved.image));
    completed = true;
  } catch (err) {
    const cause = signal.aborted ? abortError(signal, `saving ${name}`, name) : err;
    try {
      await rollBack(ctx, qmp, name, { wasRunning, migrating: migration !== undefined });
    } finally {
      if (temp) await removeIfExists(temp).catch(() => undefined);
      if (!(await hasImage(g.saved).catch(() => true))) await removeIfExists(g.saved.sidecar).catch(() => undefined);
    }
    throw cause;
  } finally {
    migration?.unsubscribe();
    await receiver?.close();
    if (!completed) await lease.release();
  }
  // The image is complete: from here on the guest is quit whatever the caller's signal says.
  try {
    await quitAndReap(ctx, qmp, name, pid, g.run.qmp);
  } finally {
    await lease.release();
  }
  ctx.emit(name, 'Stopped', 'Saved');
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
    if (info.status === 'completed') {
      onProgress?.({ fraction: 1, processedBytes: total, totalBytes: total });
      return;
    }
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new OperationRefusedError(`saving ${name}: migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`, { guest: name });
    }
    if (total > 0) onProgress?.({ fraction: Math.min(1, Math.max(0, (total - remaining) / total)), processedBytes: total - remaining, totalBytes: total });
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
