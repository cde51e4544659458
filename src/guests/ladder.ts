// The escalation ladder of one guest at stop, with one deadline:
// save → (fails while time is left) shutdown → (deadline) abort what still
// runs, then destroy. On interruption: abort a running save (the guest runs
// again), never destroy.
import { isDomainError } from '../domain/errors.js';
import { errorMessage } from '../util/error-message.js';
import type { DomainDriver, Guest, GuestState } from '../domain/types.js';
import { anySignal, deadline, now } from '../util/deadline.js';
import { runInGroups } from './groups.js';
import type { GuestObserver } from './observer.js';
import type { GuestOutcome } from './outcome.js';
import type { GuestPlan } from './plan.js';
import { SHUTDOWN_REPEAT_MS, shutdownUntilOff, waitOff } from './shutdown-wait.js';

/** How long aborting a save job may take at the deadline or on interruption. */
export const ABORT_GRACE_MS = 10_000;
/** How long a destroy (and seeing the guest off) may take after the deadline. */
export const DESTROY_GRACE_MS = 20_000;
/** The most a stop can take beyond a guest's timeout: abort, then destroy. */
export const STOP_MARGIN_MS = ABORT_GRACE_MS + DESTROY_GRACE_MS;

/** One guest to bring down. */
export interface StopTask {
  plan: GuestPlan;
  driver: DomainDriver;
}

/** What a batch of stops runs with. */
export interface StopOptions {
  parallel: number;
  /** SIGINT/SIGTERM. */
  signal: AbortSignal;
  observer: GuestObserver;
  /** Called with each outcome as soon as it is known (the journal records it). */
  onOutcome?: (outcome: GuestOutcome) => Promise<void>;
}

/** Bring every planned guest down, order group by order group (descending). */
export async function stopAll(tasks: readonly StopTask[], opts: StopOptions): Promise<GuestOutcome[]> {
  return runInGroups(tasks.map((task) => ({
    order: task.plan.order,
    timeoutMs: task.plan.timeout * 1000,
    run: async (deadlineAt: number) => {
      const outcome = await stopGuest(task, deadlineAt, opts);
      await recordOutcome(outcome, opts);
      return outcome;
    },
    skip: (reason: string) => {
      const outcome = skipped(task.plan.guest, task.plan.action, reason);
      opts.observer.end(outcome);
      return outcome;
    },
  })), {
    direction: 'desc',
    parallel: opts.parallel,
    signal: opts.signal,
    onGroup: (order, count) => opts.observer.note(`order group ${order}: ${count} guest${count === 1 ? '' : 's'}`),
  });
}

async function recordOutcome(outcome: GuestOutcome, opts: StopOptions): Promise<void> {
  try {
    await opts.onOutcome?.(outcome);
  } catch (err) {
    opts.observer.note(`${outcome.guest.name}: could not record the outcome: ${errorMessage(err)}`);
  }
}

/** A result for a guest that was not acted on. */
export function skipped(guest: Guest, action: string, reason: string): GuestOutcome {
  return { guest, action, result: 'skipped', reason, ms: 0, stateBefore: guest.state };
}

/** Run one guest's ladder; never throws. */
export async function stopGuest(task: StopTask, deadlineAt: number, opts: Pick<StopOptions, 'signal' | 'observer'>): Promise<GuestOutcome> {
  const { plan, driver } = task;
  const { guest } = plan;
  // Seconds count from its group's start, like its timeout (waiting for a slot is part of it).
  const started = Math.min(now(), deadlineAt - plan.timeout * 1000);
  const obs = opts.observer;
  const interrupt = opts.signal;
  const reasons = [...plan.reasons.filter((r) => !r.startsWith('paused: saved as paused'))];
  const done = (result: GuestOutcome['result'], action: string, extra?: string, plannedDestroy = false): GuestOutcome => {
    if (extra) reasons.push(extra);
    const o: GuestOutcome = { guest, action, result, reason: reasons.join('; '), ms: now() - started, stateBefore: guest.state };
    if (plannedDestroy) o.plannedDestroy = true;
    obs.end(o);
    return o;
  };
  const dl = deadline(deadlineAt - now());
  const op = anySignal(dl.signal, interrupt);
  let action: string = plan.action;
  let saving: Promise<void> | undefined;
  obs.begin(guest, action);
  try {
    if (plan.action === 'destroy') {
      return await destroyNow(task, interrupt, done);
    }
    if (deadlineAt <= now()) return await atDeadline(task, undefined, action, interrupt, reasons, done, 'its timeout passed while it waited for its turn');
    if (plan.action === 'save') {
      const saveCtl = new AbortController();
      const saveSignal = anySignal(saveCtl.signal, interrupt);
      saving = driver.save(guest.id, { signal: saveSignal.signal, onProgress: (p) => obs.progress(guest, p.fraction) });
      saving.catch(() => undefined);
      const settled = await settleOrAbort(saving, op.signal);
      saveSignal.clear();
      if (settled.ok) return done('saved', action);
      if (interrupt.aborted) return await afterInterruptedSave(task, saving, reasons, done);
      if (!settled.settled) {
        // Still saving at the deadline: abort the job (the driver resumes the guest), then destroy.
        return await atDeadline(task, { saving, abortSave: saveCtl }, action, interrupt, reasons, done, `still saving at its deadline (${plan.timeout} s)`);
      }
      if (isDomainError(settled.error, 'not-found')) return done('failed', action, `save: ${errorMessage(settled.error)}`);
      reasons.push(`save failed: ${errorMessage(settled.error)}; fell back to shutdown`);
      obs.step(guest, 'shutdown', `save failed (${errorMessage(settled.error)}): shutting down`);
      action = 'save->shutdown';
      saving = undefined;
    }
    // Shutdown (planned, or the fallback).
    let state: GuestState = plan.action === 'save' ? await currentState(driver, guest, op.signal) : guest.state;
    if (state === 'shutoff') return done('shutdown', action);
    if (state === 'paused') {
      if (driver.resume) {
        await driver.resume(guest.id, { signal: op.signal });
        state = 'running';
        if (!plan.resumeFirst) reasons.push('resumed so that it can shut down');
      } else if (plan.action === 'save') {
        reasons.push('paused, and the driver cannot resume it for a shutdown');
      }
    }
    let failures = 0;
    let repeats = 0;
    const how = await shutdownUntilOff(driver, guest.id, op.signal, {
      failed: (err) => {
        if (failures++ > 0) return;
        reasons.push(`shutdown request failed: ${errorMessage(err)}`);
        obs.step(guest, action, `shutdown request failed (${errorMessage(err)}): asking again`);
      },
      repeated: () => {
        if (repeats++ > 0) return;
        reasons.push(`still up ${SHUTDOWN_REPEAT_MS / 1000} s after the shutdown request: asked again`);
        obs.step(guest, action, `still up ${SHUTDOWN_REPEAT_MS / 1000} s after the shutdown request: asking again`);
      },
    });
    return done('shutdown', action, how === 'gone' ? 'gone' : undefined);
  } catch (err) {
    if (interrupt.aborted) {
      if (saving) return await afterInterruptedSave(task, saving, reasons, done);
      return done('failed', action, `interrupted (${errorMessage(interrupt.reason)}): left as it is, not destroyed`);
    }
    if (dl.signal.aborted) return await atDeadline(task, undefined, action, interrupt, reasons, done, `did not shut down within ${plan.timeout} s`);
    // Failed at once with time left, and nothing further to fall back to but the deadline.
    reasons.push(`${action}: ${errorMessage(err)}`);
    try {
      await waitOff(driver, guest.id, op.signal);
      return done('shutdown', action);
    } catch {
      if (interrupt.aborted) return done('failed', action, 'interrupted: not destroyed');
      return await atDeadline(task, undefined, action, interrupt, reasons, done, `still active at its deadline (${plan.timeout} s)`);
    }
  } finally {
    op.clear();
    dl.clear();
  }
}

type Done = (result: GuestOutcome['result'], action: string, extra?: string, plannedDestroy?: boolean) => GuestOutcome;

async function destroyNow(task: StopTask, interrupt: AbortSignal, done: Done): Promise<GuestOutcome> {
  const g = deadline(DESTROY_GRACE_MS, interrupt);
  try {
    await task.driver.destroy(task.plan.guest.id, { signal: g.signal });
    return done('destroyed', 'destroy', '', true);
  } catch (err) {
    return done('failed', 'destroy', `destroy: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

// At the deadline: abort a save still running (and wait until it has let go),
// then destroy — unless the guest went off by itself meanwhile. No destroy once interrupted.
async function atDeadline(
  task: StopTask,
  save: { saving: Promise<void>; abortSave: AbortController } | undefined,
  action: string,
  interrupt: AbortSignal,
  reasons: string[],
  done: Done,
  why: string,
): Promise<GuestOutcome> {
  const { driver, plan } = task;
  const { guest } = plan;
  reasons.push(why);
  if (save) {
    const g = deadline(ABORT_GRACE_MS);
    try {
      await driver.abort(guest.id, { signal: g.signal });
      reasons.push('save job aborted');
    } catch (err) {
      reasons.push(`aborting the save failed: ${errorMessage(err)}`);
    }
    save.abortSave.abort(new Error('deadline: save aborted'));
    const settled = await settleOrAbort(save.saving, g.signal);
    g.clear();
    if (settled.ok) {
      reasons.pop();
      return done('saved', action, 'the save completed as it was being aborted');
    }
  }
  const g = deadline(DESTROY_GRACE_MS);
  try {
    if ((await currentState(driver, guest, g.signal)) === 'shutoff') return done(save ? 'saved' : 'shutdown', action, 'went off just at its deadline');
    if (interrupt.aborted) return done('failed', action, 'interrupted: not destroyed');
    await driver.destroy(guest.id, { signal: g.signal });
    return done('destroyed', `${action}->destroy`);
  } catch (err) {
    return done('failed', `${action}->destroy`, `destroy failed: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

// Interrupted while saving: the save is aborted (the driver resumes the guest);
// make sure the job is gone and the guest is not left paused.
async function afterInterruptedSave(task: StopTask, saving: Promise<void>, reasons: string[], done: Done): Promise<GuestOutcome> {
  const { driver, plan } = task;
  const g = deadline(ABORT_GRACE_MS);
  try {
    const settled = await settleOrAbort(saving, g.signal);
    if (settled.ok) return done('saved', 'save', 'completed before the interruption took effect');
    try {
      await driver.abort(plan.guest.id, { signal: g.signal });
    } catch {
      // Nothing left to abort is the usual case here.
    }
    const now = await driver.getGuest(plan.guest.id, { signal: g.signal }).catch((err: unknown) => {
      if (isDomainError(err, 'not-found')) return undefined;
      throw err;
    });
    const state: GuestState = now?.state ?? 'shutoff';
    // The save completed after all (its abort came too late): the image holds the guest, journal it as saved.
    if (state === 'shutoff' && now?.hasSavedImage) return done('saved', 'save', 'completed while the interruption was handled');
    if (state === 'paused' && plan.guest.state === 'running' && driver.resume) {
      await driver.resume(plan.guest.id, { signal: g.signal });
      reasons.push('interrupted: save aborted, guest resumed');
    } else if (state === 'paused' && plan.guest.state === 'running') {
      reasons.push('interrupted: save aborted, but the guest is still PAUSED');
    } else {
      reasons.push(`interrupted: save aborted, guest ${state} as before`);
    }
    return done('failed', 'save');
  } catch (err) {
    return done('failed', 'save', `interrupted: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

async function currentState(driver: DomainDriver, guest: Guest, signal: AbortSignal): Promise<GuestState> {
  try {
    return (await driver.getGuest(guest.id, { signal })).state;
  } catch (err) {
    if (isDomainError(err, 'not-found')) return 'shutoff';
    throw err;
  }
}

type Settled = { ok: true; settled: true } | { ok: false; settled: true; error: unknown } | { ok: false; settled: false };

/** Wait for `p`, or stop waiting when `signal` aborts (the promise keeps running). */
export function settleOrAbort(p: Promise<unknown>, signal: AbortSignal): Promise<Settled> {
  return new Promise<Settled>((resolve) => {
    if (signal.aborted) {
      // A promise that already settled still wins: look once.
      void Promise.race([p.then(() => 'ok' as const, (error: unknown) => ({ error })), Promise.resolve('pending' as const)]).then((r) => {
        if (r === 'ok') resolve({ ok: true, settled: true });
        else if (r === 'pending') resolve({ ok: false, settled: false });
        else resolve({ ok: false, settled: true, error: r.error });
      });
      return;
    }
    const onAbort = (): void => resolve({ ok: false, settled: false });
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => resolve({ ok: true, settled: true }),
      (error: unknown) => resolve({ ok: false, settled: true, error }),
    ).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
