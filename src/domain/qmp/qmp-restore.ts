// Starting a QMP guest: restore its saved image when it has one (launch with
// `-incoming defer`, `migrate-incoming` from a unix socket we feed from the
// file, wait for MIGRATION `completed`, mark the image as being restored,
// `cont` only if it ran when saved, and remove the image once it runs again),
// else a plain launch. The rule: an image is never restored after its guest
// may have run from it, and never lost before. The mark (NAME.save renamed to
// NAME.save.restoring, the directory fsynced) comes before `cont`; a failure
// before `cont` takes it back; a marked image found at a start (a run that
// ended between `cont` and the removal, a guest that stopped at once) is moved
// aside to NAME.save.used-TIME, named in an error, and the guest cold-booted.
import { OperationRefusedError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { StartOptions } from '../types.js';
import { abortError } from '../../qmp/abort.js';
import { nextMigrationStatus, qmpCommand, type DriverContext, type GuestFiles, type QmpStatus } from './driver-context.js';
import { feedMigration } from './migration-stream.js';
import { quitAndReap } from './qmp-save.js';
import { launchQemu } from './qemu-process.js';
import { hasImage, hasRestoringMarker, markRestoring, moveMarkedAside, readSidecar, removeIfExists, unmarkRestoring } from './saved-image.js';

/** Start guest `g` (not running): restore its image if it has one, else launch it. */
export async function startGuest(ctx: DriverContext, g: GuestFiles, opts: StartOptions): Promise<void> {
  const name = g.def.name;
  if (await hasRestoringMarker(g.saved)) {
    // The guest may have run from it: never restored again, kept for the admin.
    const aside = await moveMarkedAside(g.saved);
    await removeIfExists(g.saved.sidecar).catch(() => undefined);
    ctx.log?.error(`${name}: ${g.saved.restoring} was being restored when an earlier run ended (the guest may have run from it): not restored again, kept as ${aside}`);
  }
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
  let marked = false;
  let sentCont = false;
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
    // QEMU holds the state: from here on the image is marked, before the guest may run.
    await markRestoring(g.saved);
    marked = true;
    if (run) {
      sentCont = true;
      await qmpCommand(ctx, qmp, 'cont', undefined, signal);
      await ctx.hooks.afterCont?.(name);
      const st = await qmpCommand<QmpStatus>(ctx, qmp, 'query-status', undefined, signal);
      if (!st.running) throw new OperationRefusedError(`restored ${name}, but it does not run after cont (status ${st.status})`, { guest: name });
    }
    ok = true;
  } catch (err) {
    const cause = signal.aborted ? abortError(signal, `restoring ${name}`, name) : err;
    await quitAndReap(ctx, qmp, name, pid, g.run.qmp).catch((e: unknown) => ctx.log?.error(`${name}: ${errorMessage(e)}`));
    if (sentCont) {
      // It may have run: the marked image stays marked (the next start moves it aside).
      ctx.log?.error(`${name}: restore failed after the guest was let run (${errorMessage(cause)}); QEMU stopped; ${g.saved.restoring} is not restored again`);
    } else {
      if (marked) await unmarkRestoring(g.saved).catch((e: unknown) => ctx.log?.error(`${name}: cannot take back the mark of ${g.saved.restoring}: ${errorMessage(e)} (it is not restored again)`));
      ctx.log?.warn(`${name}: restore failed (${errorMessage(cause)}); stopped the half-restored QEMU, keeping ${g.saved.image}`);
    }
    throw cause;
  } finally {
    await lease.release();
  }
  if (ok) {
    // It runs again (or is paused as saved): the image has served.
    for (const f of [g.saved.restoring, g.saved.sidecar]) {
      await removeIfExists(f).catch((err: unknown) => ctx.log?.warn(`${name}: runs again, but ${f} could not be removed: ${errorMessage(err)}`));
    }
    ctx.emit(name, 'Started', run ? 'Restored' : 'Restored paused');
  }
}
