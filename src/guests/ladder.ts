// The escalation ladder of one guest at stop, with one deadline, as explicit
// steps (each returns the next, until one returns the outcome):
//
//                                 ┌─(unreadable answer: again, 1 s later)─┐
//                                 ▼                                       │
//   start ──► wake (S3 only) ──► save ──(fails while time is left)──► save-failed ──► shutdown
//                                  │                                                     │
//                                  └──────────────(deadline)──► deadline ◄───────────────┘
//                                                                   │
//                             abort a running save through the driver, then destroy
//
// A save waits for one of its group's PARALLEL slots; a guest still waiting
// when only its shutdown reserve is left is asked to shut down instead,
// outside the limit (shutdown requests are never limited). A save that failed
// with an answer that could not be read (a fault around the call, not a
// refusal by the hypervisor) is tried again, SAVE_TRIES times in all, each try
// taking a slot like the first. On interruption: abort a running save (the
// guest runs again), never destroy.
import { isDomainError } from '../domain/errors.js';
import { errorMessage } from '../util/error-message.js';
import type { DomainDriver, Guest, GuestState } from '../domain/types.js';
import { anySignal, deadline, now, sleep } from '../util/deadline.js';
import { runInGroups, type Slots } from './groups.js';
import type { GuestObserver } from './observer.js';
import { destroyedAfter, fellBack, type GuestOutcome, type StopAction } from './outcome.js';
import type { GuestPlan } from './plan.js';
import { shutdownReserveMs } from './save-slots.js';
import { SHUTDOWN_REPEAT_MS, shutdownUntilOff, waitOff } from './shutdown-wait.js';

/** How long aborting a save job may take at the deadline or on interruption (the driver's own abort: libvirt repeats `domjobabort` while its managedsave runs). */
export const ABORT_GRACE_MS = 10_000;
/** How long a destroy (and seeing the guest off) may take after the deadline. */
export const DESTROY_GRACE_MS = 20_000;
/** How long a guest's outcome may take to be recorded (the journal's write) before its group goes on without waiting. */
export const JOURNAL_WAIT_MS = 10_000;
/** The most a stop can take beyond a guest's timeout: abort, then destroy. */
export const STOP_MARGIN_MS = ABORT_GRACE_MS + DESTROY_GRACE_MS;
/** How often a save is tried in all when it fails with an answer that could not be read (a ProtocolError), while time is left before the shutdown reserve. */
export const SAVE_TRIES = 3;
/** The pause before a save is tried again. */
export const SAVE_RETRY_PAUSE_MS = 1000;
/** How long a guest woken from S3 may take to run again before its save or shutdown is tried anyway. */
export const WAKE_WAIT_MS = 10_000;

/** One guest to bring down. */
export interface StopTask {
  plan: GuestPlan;
  driver: DomainDriver;
}

/** What a batch of stops runs with. */
export interface StopOptions {
  /** Saves at once per order group (PARALLEL); 0 = all. Shutdown requests are never limited. */
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
    run: async (deadlineAt: number, slots: Slots) => {
      const outcome = await stopGuest(task, deadlineAt, { ...opts, slots });
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
    limit: 'inside',
    signal: opts.signal,
    onGroup: (order, count) => opts.observer.note(`order group ${order}: ${count} guest${count === 1 ? '' : 's'}`),
  });
}

// The journal's write of an outcome, waited for up to JOURNAL_WAIT_MS: a state directory
// that hangs (a dead NFS server) must not hold the next order group for ever.
async function recordOutcome(outcome: GuestOutcome, opts: StopOptions): Promise<void> {
  const { onOutcome } = opts;
  if (!onOutcome) return;
  const recording = (async () => onOutcome(outcome))();
  const w = deadline(JOURNAL_WAIT_MS);
  try {
    const settled = await settleOrAbort(recording, w.signal);
    if (!settled.settled) opts.observer.note(`${outcome.guest.name}: the outcome was not recorded within ${JOURNAL_WAIT_MS / 1000} s: going on (the write goes on too)`);
    else if (!settled.ok) opts.observer.note(`${outcome.guest.name}: could not record the outcome: ${errorMessage(settled.error)}`);
  } catch (err) {
    opts.observer.note(`${outcome.guest.name}: could not record the outcome: ${errorMessage(err)}`);
  } finally {
    w.clear();
  }
}

/** A result for a guest that was not acted on. */
export function skipped(guest: Guest, action: StopAction, reason: string): GuestOutcome {
  return { guest, action, result: 'skipped', reason, ms: 0, stateBefore: guest.state };
}

/** A save in flight: its promise, and the signal it listens to (aborting it runs the driver's own abort). */
interface SaveJob {
  saving: Promise<void>;
  abort: AbortController;
}

/** The next step of the ladder, or its end. */
type Step =
  | { to: 'wake'; then: 'save' | 'shutdown' }
  | { to: 'save'; tries?: number }
  | { to: 'save-failed'; error: unknown; tries: number }
  | { to: 'shutdown' }
  | { to: 'deadline'; why: string; save?: SaveJob }
  | { to: 'interrupted-save'; save: SaveJob }
  | { to: 'destroy-now' }
  | { to: 'done'; outcome: GuestOutcome };

/** What every step of one guest's ladder shares. */
interface Ladder {
  task: StopTask;
  guest: Guest;
  driver: DomainDriver;
  deadlineAt: number;
  /** SIGINT/SIGTERM. */
  interrupt: AbortSignal;
  /** The guest's deadline or the interruption. */
  op: AbortSignal;
  /** The guest's deadline alone. */
  expired: AbortSignal;
  slots: Slots;
  parallel: number;
  obs: GuestObserver;
  /** The path so far. */
  action: StopAction;
  reasons: string[];
  /** The state as last seen. */
  state: GuestState;
  end: (result: GuestOutcome['result'], extra?: string, plannedDestroy?: boolean) => Step;
}

/** Run one guest's ladder; never throws. */
export async function stopGuest(
  task: StopTask,
  deadlineAt: number,
  opts: Pick<StopOptions, 'signal' | 'observer'> & { slots?: Slots; parallel?: number },
): Promise<GuestOutcome> {
  const { plan, driver } = task;
  const { guest } = plan;
  // Seconds count from its group's start, like its timeout.
  const started = Math.min(now(), deadlineAt - plan.timeout * 1000);
  const dl = deadline(deadlineAt - now());
  const op = anySignal(dl.signal, opts.signal);
  const l: Ladder = {
    task,
    guest,
    driver,
    deadlineAt,
    interrupt: opts.signal,
    op: op.signal,
    expired: dl.signal,
    slots: opts.slots ?? { take: async () => () => undefined },
    parallel: opts.parallel ?? 0,
    obs: opts.observer,
    action: plan.action,
    reasons: plan.reasons.filter((r) => !r.startsWith('paused: saved as paused')),
    state: guest.state,
    end: (result, extra, plannedDestroy = false) => {
      if (extra) l.reasons.push(extra);
      const o: GuestOutcome = { guest, action: l.action, result, reason: l.reasons.join('; '), ms: now() - started, stateBefore: guest.state };
      if (plannedDestroy) o.plannedDestroy = true;
      return { to: 'done', outcome: o };
    },
  };
  l.obs.begin(guest, l.action);
  let outcome: GuestOutcome;
  try {
    let step: Step = firstStep(l);
    while (step.to !== 'done') step = await STEPS[step.to](l, step as never);
    outcome = step.outcome;
  } catch (err) {
    // A step that threw (a bug): say so rather than lose the guest's outcome.
    outcome = (l.end('failed', `internal error: ${errorMessage(err)}`) as Extract<Step, { to: 'done' }>).outcome;
  } finally {
    op.clear();
    dl.clear();
  }
  l.obs.end(outcome);
  return outcome;
}

function firstStep(l: Ladder): Step {
  const { plan } = l.task;
  if (plan.action === 'destroy') return { to: 'destroy-now' };
  if (l.deadlineAt <= now()) return { to: 'deadline', why: 'its timeout passed before its turn' };
  const then = plan.action === 'save' ? 'save' : 'shutdown';
  if (l.guest.state === 'suspended') return { to: 'wake', then };
  return { to: then };
}

type StepFn<S extends Step['to']> = (l: Ladder, step: Extract<Step, { to: S }>) => Promise<Step>;

const STEPS: { [S in Exclude<Step['to'], 'done'>]: StepFn<S> } = {
  wake: wakeStep,
  save: saveStep,
  'save-failed': saveFailedStep,
  shutdown: shutdownStep,
  deadline: deadlineStep,
  'interrupted-save': interruptedSaveStep,
  'destroy-now': destroyNowStep,
};

// ACPI S3 (pmsuspended): a sleeping guest can be neither saved nor shut down; wake it first.
async function wakeStep(l: Ladder, step: { then: 'save' | 'shutdown' }): Promise<Step> {
  if (!l.driver.wake) {
    l.reasons.push('suspended (S3), and this driver cannot wake it');
    return { to: step.then };
  }
  l.obs.step(l.guest, l.action, 'suspended (S3): waking it');
  const w = deadline(WAKE_WAIT_MS, l.op);
  try {
    await l.driver.wake(l.guest.id, { signal: w.signal });
    l.state = await l.driver.waitForState(l.guest.id, ['running', 'shutoff'], { signal: w.signal });
    l.reasons.push('woken from S3 (pmsuspended)');
  } catch (err) {
    if (l.interrupt.aborted) return l.end('failed', `interrupted while waking it (${errorMessage(l.interrupt.reason)}): left as it is`);
    l.reasons.push(`waking it from S3 failed: ${errorMessage(err)}`);
  } finally {
    w.clear();
  }
  if (l.state === 'shutoff') return l.end('shutdown', 'went off as it woke');
  if (l.expired.aborted) return { to: 'deadline', why: `still suspended at its deadline (${l.task.plan.timeout} s)` };
  return { to: step.then };
}

// Wait for a save slot (until only the shutdown reserve is left), then save.
// `tries`: the saves tried before this one (a try again takes a slot like the first).
async function saveStep(l: Ladder, step: { tries?: number }): Promise<Step> {
  const { plan } = l.task;
  const tries = (step.tries ?? 0) + 1;
  const reserve = shutdownReserveMs(plan.timeout * 1000);
  const cut = deadline(l.deadlineAt - reserve - now(), l.interrupt);
  let free: () => void;
  try {
    const waiting = l.slots.take(cut.signal);
    let queued = true;
    void waiting.then(() => (queued = false), () => undefined);
    await Promise.resolve();
    if (queued) l.obs.step(l.guest, l.action, `waiting for a save slot (PARALLEL=${l.parallel})`);
    free = await waiting;
  } catch (err) {
    if (l.interrupt.aborted && tries > 1) return afterError(l, err);
    if (l.interrupt.aborted) return { to: 'done', outcome: { ...skipped(l.guest, l.action, 'interrupted before its turn'), ms: 0 } };
    l.action = fellBack(l.action);
    const why = `no save slot (PARALLEL=${l.parallel}) until ${(reserve / 1000).toFixed(0)} s before its deadline: shut down instead`;
    l.reasons.push(why);
    l.obs.step(l.guest, l.action, why);
    return { to: 'shutdown' };
  } finally {
    cut.clear();
  }
  // The save listens to its own signal until it has settled: aborting it runs the driver's abort
  // (libvirt: `domjobabort` repeated while managedsave runs, and its fallback when libvirtd does not answer).
  const abort = new AbortController();
  const saveSignal = anySignal(abort.signal, l.interrupt);
  // Its state as last seen (listed, or looked at after a failed try) is what a failed save puts it back to.
  const saving = l.driver.save(l.guest.id, { signal: saveSignal.signal, stateBefore: l.state, onProgress: (p) => l.obs.progress(l.guest, p.fraction) });
  saving.catch(() => undefined);
  void saving.then(free, free).finally(() => saveSignal.clear());
  const job: SaveJob = { saving, abort };
  const settled = await settleOrAbort(saving, l.op);
  if (settled.ok) return l.end('saved');
  if (l.interrupt.aborted) return { to: 'interrupted-save', save: job };
  // Still saving at the deadline: abort the job (the driver resumes the guest), then destroy.
  if (!settled.settled) return { to: 'deadline', why: `still saving at its deadline (${plan.timeout} s)`, save: job };
  if (isDomainError(settled.error, 'not-found')) return l.end('failed', `save: ${errorMessage(settled.error)}`);
  return { to: 'save-failed', error: settled.error, tries };
}

// A save failed with time left. An answer that could not be read (a ProtocolError: a fault around
// the call, such as an empty virsh output, not a refusal) costs the guest its save only once
// SAVE_TRIES are spent or only the shutdown reserve is left: it is tried again SAVE_RETRY_PAUSE_MS
// later, if the guest is as it was before (a running guest the failed save left paused would be
// saved as paused). Anything else — refused, timed out, not reachable, interrupted — falls back at
// once: the guest is asked to shut down. A guest found off with a saved image it did not have before
// is saved: the save completed, and only its answer was lost (it is not tried again either).
async function saveFailedStep(l: Ladder, step: { error: unknown; tries: number }): Promise<Step> {
  const why = errorMessage(step.error);
  const reserve = shutdownReserveMs(l.task.plan.timeout * 1000);
  const unreadable = isDomainError(step.error, 'protocol');
  const timeLeft = (): boolean => l.deadlineAt - reserve - now() > SAVE_RETRY_PAUSE_MS;
  let again = unreadable && step.tries < SAVE_TRIES && timeLeft();
  if (again) {
    l.obs.step(l.guest, l.action, `save failed with an answer that could not be read (${why}): trying it again in ${SAVE_RETRY_PAUSE_MS / 1000} s`);
    const cut = deadline(l.deadlineAt - reserve - now(), l.interrupt);
    try {
      await sleep(SAVE_RETRY_PAUSE_MS, cut.signal);
    } catch (err) {
      if (l.interrupt.aborted) return afterError(l, err);
      again = false;
    } finally {
      cut.clear();
    }
  }
  let state: GuestState | undefined;
  let unread: { error: unknown } | undefined;
  try {
    // The failed save may have left it off (QEMU died, or the save completed) or paused: look before asking or trying again.
    const found = await lookUp(l.driver, l.guest, l.op);
    state = found?.state ?? 'shutoff';
    // Off with an image it did not have when listed: the save completed, only its answer was lost
    // (virsh killed or its connection dropped after libvirt finished; qmp: QEMU slow to exit once its image was in place).
    if (state === 'shutoff' && hasNewImage(l.guest, found)) {
      return l.end('saved', `the save completed although the call failed (${why}): off, with its saved image`);
    }
  } catch (error) {
    if (l.interrupt.aborted || l.expired.aborted) return afterError(l, error);
    unread = { error };
  }
  if (again && state === l.state && timeLeft()) {
    const text = `save failed with an answer that could not be read (${why}): tried again ${SAVE_RETRY_PAUSE_MS / 1000} s later (try ${step.tries + 1} of ${SAVE_TRIES})`;
    l.reasons.push(text);
    l.obs.step(l.guest, l.action, text);
    return { to: 'save', tries: step.tries };
  }
  l.action = fellBack(l.action);
  const not = !unreadable || unread ? ''
    : step.tries >= SAVE_TRIES ? ` (tried ${step.tries} times)`
    : state !== l.state ? ` (not tried again: the failed save left it ${state})`
    : ` (not tried again: only its shutdown reserve of ${(reserve / 1000).toFixed(0)} s is left)`;
  l.reasons.push(`save failed: ${why}${not}; fell back to shutdown`);
  l.obs.step(l.guest, l.action, `save failed (${why}): shutting down`);
  if (state !== undefined) l.state = state;
  // Its state cannot be read (the daemon is slow or hiccuped): ask it to shut down all the same,
  // rather than only wait for the deadline; a request to a guest that is off is refused, harmlessly.
  if (unread) l.reasons.push(`its state after the failed save could not be read (${errorMessage(unread.error)}): asked to shut down all the same`);
  return { to: 'shutdown' };
}

// The ACPI request, repeated while the guest is up, until it is off or the deadline.
async function shutdownStep(l: Ladder): Promise<Step> {
  const { plan } = l.task;
  try {
    if (l.state === 'shutoff') return l.end('shutdown');
    if (l.state === 'paused') {
      if (l.driver.resume) {
        await l.driver.resume(l.guest.id, { signal: l.op });
        l.state = 'running';
        if (!plan.resumeFirst) l.reasons.push('resumed so that it can shut down');
      } else if (plan.action === 'save') {
        l.reasons.push('paused, and the driver cannot resume it for a shutdown');
      }
    }
    let failures = 0;
    let repeats = 0;
    const how = await shutdownUntilOff(l.driver, l.guest.id, l.op, {
      failed: (err) => {
        if (failures++ > 0) return;
        l.reasons.push(`shutdown request failed: ${errorMessage(err)}`);
        l.obs.step(l.guest, l.action, `shutdown request failed (${errorMessage(err)}): asking again`);
      },
      repeated: () => {
        if (repeats++ > 0) return;
        l.reasons.push(`still up ${SHUTDOWN_REPEAT_MS / 1000} s after the shutdown request: asked again`);
        l.obs.step(l.guest, l.action, `still up ${SHUTDOWN_REPEAT_MS / 1000} s after the shutdown request: asking again`);
      },
    });
    return l.end('shutdown', how === 'gone' ? 'gone' : undefined);
  } catch (err) {
    return afterError(l, err);
  }
}

// A call failed: interrupted, at the deadline, or at once with time left (then only the deadline is left to wait for).
async function afterError(l: Ladder, err: unknown): Promise<Step> {
  const { plan } = l.task;
  if (l.interrupt.aborted) return l.end('failed', `interrupted (${errorMessage(l.interrupt.reason)}): left as it is, not destroyed`);
  if (l.expired.aborted) return { to: 'deadline', why: `did not shut down within ${plan.timeout} s` };
  l.reasons.push(`${l.action}: ${errorMessage(err)}`);
  try {
    await waitOff(l.driver, l.guest.id, l.op);
    return l.end('shutdown');
  } catch {
    if (l.interrupt.aborted) return l.end('failed', 'interrupted: not destroyed');
    return { to: 'deadline', why: `still active at its deadline (${plan.timeout} s)` };
  }
}

async function destroyNowStep(l: Ladder): Promise<Step> {
  const g = deadline(DESTROY_GRACE_MS, l.interrupt);
  try {
    await l.driver.destroy(l.guest.id, { signal: g.signal });
    return l.end('destroyed', '', true);
  } catch (err) {
    return l.end('failed', `destroy: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

// At the deadline: abort a save still running through the driver — the save's
// own signal (the driver's abort dance) and the contract's abort — and wait
// until it has let go; then destroy, unless the guest went off by itself
// meanwhile. No destroy once interrupted.
async function deadlineStep(l: Ladder, step: { why: string; save?: SaveJob }): Promise<Step> {
  const { driver, guest } = l;
  l.reasons.push(step.why);
  if (step.save) {
    const g = deadline(ABORT_GRACE_MS);
    try {
      step.save.abort.abort(new Error('deadline: save aborted'));
      try {
        await driver.abort(guest.id, { signal: g.signal });
        l.reasons.push('save job aborted');
      } catch (err) {
        l.reasons.push(`aborting the save failed: ${errorMessage(err)}`);
      }
      const settled = await settleOrAbort(step.save.saving, g.signal);
      if (settled.ok) {
        l.reasons.pop();
        return l.end('saved', 'the save completed as it was being aborted');
      }
      if (!settled.settled) l.reasons.push(`the save did not let go within ${ABORT_GRACE_MS / 1000} s of its abort`);
    } finally {
      g.clear();
    }
  }
  const g = deadline(DESTROY_GRACE_MS);
  try {
    const found = await lookUp(driver, guest, g.signal);
    if ((found?.state ?? 'shutoff') === 'shutoff') {
      // Saved only with an image it did not have when listed; else it went off by itself.
      if (step.save && hasNewImage(guest, found)) return l.end('saved', 'went off with its saved image just at its deadline');
      if (step.save) l.action = fellBack(l.action);
      return l.end('shutdown', step.save ? 'went off without a new saved image just at its deadline' : 'went off just at its deadline');
    }
    if (l.interrupt.aborted) return l.end('failed', 'interrupted: not destroyed');
    l.action = destroyedAfter(l.action);
    await driver.destroy(guest.id, { signal: g.signal });
    return l.end('destroyed');
  } catch (err) {
    l.action = destroyedAfter(l.action);
    return l.end('failed', `destroy failed: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

// Interrupted while saving: the save is aborted through its signal (the driver
// resumes the guest); make sure the job is gone and the guest is not left paused.
async function interruptedSaveStep(l: Ladder, step: { save: SaveJob }): Promise<Step> {
  const { driver, guest } = l;
  const g = deadline(ABORT_GRACE_MS);
  try {
    const settled = await settleOrAbort(step.save.saving, g.signal);
    if (settled.ok) return l.end('saved', 'completed before the interruption took effect');
    try {
      await driver.abort(guest.id, { signal: g.signal });
    } catch {
      // Nothing left to abort is the usual case here.
    }
    const found = await lookUp(driver, guest, g.signal);
    const state: GuestState = found?.state ?? 'shutoff';
    // The save completed after all (its abort came too late): the image holds the guest, journal it as saved.
    if (state === 'shutoff' && hasNewImage(guest, found)) return l.end('saved', 'completed while the interruption was handled');
    if (state === 'paused' && guest.state === 'running' && driver.resume) {
      await driver.resume(guest.id, { signal: g.signal });
      l.reasons.push('interrupted: save aborted, guest resumed');
    } else if (state === 'paused' && guest.state === 'running') {
      l.reasons.push('interrupted: save aborted, but the guest is still PAUSED');
    } else {
      l.reasons.push(`interrupted: save aborted, guest ${state} as before`);
    }
    return l.end('failed');
  } catch (err) {
    return l.end('failed', `interrupted: ${errorMessage(err)}`);
  } finally {
    g.clear();
  }
}

/**
 * Whether `found` (the guest as it is now) has a saved image that `listed` did not have: none when listed,
 * or another file than the one listed (qmp: an image older than the running guest, replaced by the save).
 * An image it had when listed never counts: it does not hold the state the save was to write.
 */
export function hasNewImage(listed: Guest, found: Guest | undefined): boolean {
  if (!found?.hasSavedImage) return false;
  if (!listed.hasSavedImage) return true;
  return listed.savedImageId !== undefined && found.savedImageId !== undefined && found.savedImageId !== listed.savedImageId;
}

/** The guest as it is now; undefined once the driver no longer knows it (a transient guest libvirt forgot: off). */
async function lookUp(driver: DomainDriver, guest: Guest, signal: AbortSignal): Promise<Guest | undefined> {
  try {
    return await driver.getGuest(guest.id, { signal });
  } catch (err) {
    if (isDomainError(err, 'not-found')) return undefined;
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
