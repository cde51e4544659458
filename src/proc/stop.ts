// Stopping a process, one way for all: ask it to end (SIGTERM, or the
// caller's own way such as QMP `quit`), wait up to a grace period, then
// SIGKILL after the deadline and wait for it to go. Every look and every
// signal goes through the caller's "is this pid still ours" check
// (./identity.ts), so a pid reused meanwhile is never signalled.
import { now, sleep } from '../util/deadline.js';

/** Options of stopProcess. */
export interface StopProcessOptions {
  /** Whether `pid` is still the process meant: checked before every signal and at every step of the waits. */
  isOurs: () => Promise<boolean>;
  /**
   * Ask it to end; resolves true when it was asked. Default: SIGTERM to the checked pid. `null`: do not ask,
   * SIGKILL at once (a process that hangs).
   */
  ask?: (() => Promise<boolean>) | null;
  /** How long it may take to end once asked (ms). */
  graceMs: number;
  /** How long it may take when it could not be asked (ms; default graceMs). */
  unaskedGraceMs?: number;
  /** The grace counts from before the asking (the ask shares its deadline), not from after it. */
  graceIncludesAsk?: boolean;
  /** How long to wait for it to go after SIGKILL (ms); 0 looks once. */
  killWaitMs: number;
  /** Called when the grace ran out (or there was none) and SIGKILL follows. */
  onKill?: () => void;
  /** Step of the waits (ms, default 10). */
  pollMs?: number;
}

/** How it ended: by itself (or when asked), by SIGKILL, or not at all; `error` when SIGKILL could not be sent. */
export type StopProcessResult = { result: 'exited' | 'killed' | 'survived' } | { result: 'failed'; error: Error };

/** Stop `pid`: ask, wait, SIGKILL after the deadline, wait. Not ours (any more) counts as exited. */
export async function stopProcess(pid: number, opts: StopProcessOptions): Promise<StopProcessResult> {
  const step = opts.pollMs ?? 10;
  if (opts.ask !== null) {
    const t0 = now();
    const asked = await (opts.ask ?? (() => signalIfOurs(pid, 'SIGTERM', opts.isOurs)))();
    const grace = Math.max(0, (asked ? opts.graceMs : (opts.unaskedGraceMs ?? opts.graceMs)) - (opts.graceIncludesAsk ? now() - t0 : 0));
    if (await waitUntilGone(opts.isOurs, grace, step)) return { result: 'exited' };
  } else if (!(await opts.isOurs())) {
    return { result: 'exited' };
  }
  opts.onKill?.();
  try {
    if (!(await opts.isOurs())) return { result: 'exited' };
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return { result: 'failed', error: err as Error };
  }
  if (opts.killWaitMs <= 0) return { result: 'killed' };
  return (await waitUntilGone(opts.isOurs, opts.killWaitMs, step)) ? { result: 'killed' } : { result: 'survived' };
}

/** Send `sig` to `pid` only when it is still ours; false when it was not (or is gone). */
export async function signalIfOurs(pid: number, sig: NodeJS.Signals, isOurs: () => Promise<boolean>): Promise<boolean> {
  if (!(await isOurs())) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Wait until the process is no longer ours; false when `ms` passed first. The wait is not cut short by an interrupt: a process half stopped is worse than one waited for. */
export async function waitUntilGone(isOurs: () => Promise<boolean>, ms: number, pollMs = 10): Promise<boolean> {
  const end = now() + ms;
  for (;;) {
    if (!(await isOurs())) return true;
    if (now() >= end) return false;
    await sleep(pollMs);
  }
}
