// Starting a QMP guest: restore its saved image when it has one (launch with
// `-incoming defer`, `migrate-incoming` from a unix socket we feed from the
// file, wait for MIGRATION `completed`, `cont` only if it ran when saved, and
// remove the image only once it runs again), else a plain launch.
import { OperationRefusedError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { StartOptions } from '../types.js';
import { abortError } from '../../qmp/abort.js';
import { nextMigrationStatus, qmpCommand, type DriverContext, type GuestFiles, type QmpStatus } from './driver-context.js';
import { feedMigration } from './migration-stream.js';
import { quitAndReap } from './qmp-save.js';
import { launchQemu } from './qemu-process.js';
import { hasImage, readSidecar, removeIfExists } from './saved-image.js';

/** Start guest `g` (not running): restore its image if it has one, else launch it. */
export async function startGuest(ctx: DriverContext, g: GuestFiles, opts: StartOptions): Promise<void> {
  const name = g.def.name;
  if (await hasImage(g.saved)) return restoreGuest(ctx, g, opts);
  const launchOpts = { signal: opts.signal, timeoutMs: ctx.qemuTimeoutMs, ...(opts.paused ? { paused: true } : {}) };
  await launchQemu(g.def.argv, name, g.run, launchOpts);
  ctx.emit(name, 'Started', opts.paused ? 'Booted paused' : 'Booted');
}

async function restoreGuest(ctx: DriverContext, g: GuestFiles, opts: StartOptions): Promise<void> {
  const name = g.def.name;
  const { signal } = opts;
  const sidecar = await readSidecar(g.saved);
  const run = opts.paused === undefined ? (sidecar?.wasRunning ?? true) : !opts.paused;
  const pid = await launchQemu(g.def.argv, name, g.run, { signal, timeoutMs: ctx.qemuTimeoutMs, incoming: true });
  let ok = false;
  const lease = await ctx.pool.acquire(name, g.run.qmp, { signal, connectMs: ctx.qemuTimeoutMs }).catch(async (err: unknown) => {
    await quitAndReap(ctx, undefined, name, pid, g.run.qmp).catch(() => undefined);
    throw err;
  });
  const qmp = lease.qmp;
  try {
    await qmpCommand(ctx, qmp, 'migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }, signal);
    const migration = qmp.listen('MIGRATION');
    try {
      await qmpCommand(ctx, qmp, 'migrate-incoming', { uri: `unix:${g.run.incomingSocket}` }, signal);
      const fed = feedMigration(g.run.incomingSocket, g.saved.image, { signal, connectMs: ctx.qemuTimeoutMs });
      fed.catch(() => undefined);
      for (;;) {
        const { status } = await nextMigrationStatus(ctx, qmp, migration, signal);
        if (status === 'completed') break;
        if (status === 'failed' || status === 'cancelled') {
          throw new OperationRefusedError(`restoring ${name} from ${g.saved.image}: migration ${status}`, { guest: name });
        }
      }
      // Completed: QEMU has the whole state; how our end of the socket closed no longer matters.
      await fed.catch((err: unknown) => ctx.log?.debug(`${name}: after the restore completed: ${errorMessage(err)}`));
    } finally {
      migration.unsubscribe();
    }
    if (run) {
      await qmpCommand(ctx, qmp, 'cont', undefined, signal);
      const st = await qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal);
      if (!st.running) throw new OperationRefusedError(`restored ${name}, but it does not run after cont (status ${st.status})`, { guest: name });
    }
    ok = true;
  } catch (err) {
    const cause = signal.aborted ? abortError(signal, `restoring ${name}`, name) : err;
    ctx.log?.warn(`${name}: restore failed (${errorMessage(cause)}); stopping the half-restored QEMU, keeping ${g.saved.image}`);
    await quitAndReap(ctx, qmp, name, pid, g.run.qmp).catch((e: unknown) => ctx.log?.error(`${name}: ${errorMessage(e)}`));
    throw cause;
  } finally {
    await lease.release();
  }
  if (ok) {
    // It runs again (or is paused as saved): the image has served.
    for (const f of [g.saved.image, g.saved.sidecar]) {
      await removeIfExists(f).catch((err: unknown) => ctx.log?.warn(`${name}: runs again, but ${f} could not be removed: ${errorMessage(err)}`));
    }
    ctx.emit(name, 'Started', run ? 'Restored' : 'Restored paused');
  }
}
