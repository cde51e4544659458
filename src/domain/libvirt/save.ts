// managedsave with progress (from `--verbose`), cut off by the caller's signal
// through libvirt's job abort (`domjobabort`), so the guest is left as it was:
// running when it ran, paused when it was paused.
import { InterruptedError, isDomainError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import type { GuestState, SaveOptions } from '../types.js';
import type { Log } from '../../util/log.js';
import { parseVerbosePercents } from './parse.js';
import type { Virsh } from './virsh.js';
import { sleep } from '../../util/deadline.js';

/** What a save needs from the driver. */
export interface SaveDeps {
  virsh: Virsh;
  id: string;
  /**
   * Ask the guest's state as the save began (see stateAsSaveBegan); undefined when it
   * could not be read. Called once, right after `managedsave` was started, so that it runs
   * alongside it.
   */
  before: () => Promise<GuestState | undefined>;
  /** The save's own deadline (ms). */
  longMs: number;
  log?: Log;
  domstate: (id: string, signal: AbortSignal) => Promise<{ state: GuestState; detail: string }>;
}

/**
 * The state a guest had as its save began, from a `domstate --reason` asked
 * alongside the save: a guest the save has paused already reads `paused
 * (saving)`, and ran; one the save has already taken off no longer tells
 * (undefined, as when the call failed). Never rejects.
 */
export function stateAsSaveBegan(asked: Promise<{ state: GuestState; detail: string }>): Promise<GuestState | undefined> {
  return asked.then(
    ({ state, detail }) => {
      if (state === 'paused' && /\(saving\)/.test(detail)) return 'running';
      return state === 'shutoff' ? undefined : state;
    },
    () => undefined,
  );
}

/** How often a save's job abort is repeated while its `managedsave` still runs. */
export const ABORT_RETRY_MS = 200;

/** Run `virsh managedsave --verbose`; on abort, abort libvirt's job and put the guest back as it was. */
export async function saveGuest(deps: SaveDeps, opts: SaveOptions): Promise<void> {
  const { virsh, id } = deps;
  const dom = `--domain=${id}`;
  if (opts.signal.aborted) throw new InterruptedError(`save of ${id}: cut off before it began`, { cause: opts.signal.reason, guest: id });
  // The save's virsh is not tied to the caller's signal: an abort goes through domjobabort.
  const own = new AbortController();
  // Aborted once the save's virsh has exited: ends the repeated job aborts.
  const ended = new AbortController();
  let abortRequested = false;
  let abortDone: Promise<void> = Promise.resolve();
  const onAbort = (): void => {
    abortRequested = true;
    abortDone = abortWhileSaving(deps, ended.signal).catch((err: unknown) => {
      // libvirtd does not answer: at least stop waiting for its save.
      deps.log?.warn(`abort of the save of ${id} failed: ${errorMessage(err)}`);
      own.abort(opts.signal.reason);
    });
  };
  opts.signal.addEventListener('abort', onAbort, { once: true });
  let last = -1;
  const onStderr = (chunk: string): void => {
    for (const pct of parseVerbosePercents(chunk)) {
      if (pct === last || !opts.onProgress) continue;
      last = pct;
      opts.onProgress({ fraction: pct / 100 });
    }
  };
  let failure: { err: unknown } | undefined;
  let before: Promise<GuestState | undefined> = Promise.resolve(undefined);
  try {
    const saving = virsh.run(['managedsave', '--verbose', dom], {
      signal: own.signal,
      guest: id,
      timeoutMs: deps.longMs,
      onDeadline: 'timed-out',
      onStderr,
      watchdog: true,
    });
    before = deps.before();
    await saving;
  } catch (err) {
    failure = { err };
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    ended.abort();
  }
  await abortDone;
  if (failure) {
    await putBack(deps, before);
    if (abortRequested) {
      throw new InterruptedError(`save of ${id} aborted: ${errorMessage(failure.err)}`, { cause: failure.err, guest: id });
    }
    throw failure.err;
  }
  if (abortRequested) deps.log?.info(`save of ${id} completed before its abort reached libvirt: the guest is saved`);
}

/**
 * `virsh domjobabort` until the save's virsh has exited (`ended`). Once is
 * not enough: an abort that comes while virsh is still connecting finds no
 * job yet, and one that comes while libvirt pauses the guest or writes the
 * image header may reach QEMU before its migration has begun.
 */
async function abortWhileSaving(deps: SaveDeps, ended: AbortSignal): Promise<void> {
  while (!ended.aborted) {
    await abortJob(deps);
    await sleep(ABORT_RETRY_MS, ended).catch(() => undefined);
  }
}

/** `virsh domjobabort`, with a deadline of its own (the caller's signal has fired already); no job is not an error. */
async function abortJob(deps: SaveDeps): Promise<void> {
  const ac = new AbortController();
  try {
    await deps.virsh.run(['domjobabort', `--domain=${deps.id}`], { signal: ac.signal, guest: deps.id });
  } catch (err) {
    // No job (yet, or any more): the loop asks again while managedsave runs.
    if (isDomainError(err, 'refused') && /no job|not running|not active/i.test(err.message)) return;
    throw err;
  }
}

/** After a failed or aborted save: resume a guest that ran before and is left paused. */
async function putBack(deps: SaveDeps, asked: Promise<GuestState | undefined>): Promise<void> {
  const ac = new AbortController();
  try {
    const [before, now] = await Promise.all([asked, deps.domstate(deps.id, ac.signal)]);
    if (before === undefined && now.state === 'paused') {
      // Resuming a guest its admin had paused would be worse than leaving it paused: the caller decides.
      deps.log?.error(`guest ${deps.id} is paused (${now.detail}) after a failed save, and its state before the save could not be read: left paused`);
    }
    if (before === 'running' && now.state === 'paused') {
      deps.log?.warn(`guest ${deps.id} was left paused (${now.detail}) by a failed save: resuming it`);
      await deps.virsh.run(['resume', `--domain=${deps.id}`], { signal: ac.signal, guest: deps.id });
    }
  } catch (err) {
    deps.log?.error(`guest ${deps.id}: cannot check or resume it after a failed save: ${errorMessage(err)}`);
  }
}
