// Deadlines as AbortSignals, built on AbortController and the global
// setTimeout (so fake timers in tests control them), measured on the
// monotonic clock. Any duration is right: Node's setTimeout takes at most
// 2^31-1 ms (about 24.8 days) and fires at once for more, so longer waits
// are chained from timers within that bound; Infinity never fires.
import { setMaxListeners } from 'node:events';

/** The reason a deadline signal carries when it fires. */
export class DeadlineError extends Error {
  constructor(readonly ms: number, what = 'deadline') {
    super(`${what} of ${formatMs(ms)} passed`);
    this.name = 'DeadlineError';
  }
}

/** A signal that aborts after `ms` or when any parent aborts; `clear()` stops the timer. */
export function deadline(ms: number, ...parents: (AbortSignal | undefined)[]): { signal: AbortSignal; clear: () => void } {
  // A deadline is often the parent of every guest's and every call's deadline.
  const ac = runController();
  const cleanups: (() => void)[] = [];
  const clear = (): void => {
    for (const c of cleanups.splice(0)) c();
  };
  const abort = (reason: unknown): void => {
    clear();
    if (!ac.signal.aborted) ac.abort(reason);
  };
  for (const p of parents) {
    if (!p) continue;
    if (p.aborted) {
      abort(p.reason);
      return { signal: ac.signal, clear };
    }
    const onAbort = (): void => abort(p.reason);
    p.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => p.removeEventListener('abort', onAbort));
  }
  cleanups.push(after(ms, () => abort(new DeadlineError(ms))));
  return { signal: ac.signal, clear };
}

/** The longest delay Node's setTimeout honours (2^31-1 ms); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Run `fn` once `ms` have passed (Infinity or NaN: never), however long that is:
 * waits beyond MAX_TIMER_MS are chained. Returns the cancel function.
 */
export function after(ms: number, fn: () => void): () => void {
  if (!(ms < Infinity)) return () => undefined; // Infinity, NaN: never
  let t: ReturnType<typeof setTimeout> | undefined;
  const arm = (left: number): void => {
    if (left > MAX_TIMER_MS) {
      t = setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS);
    } else {
      t = setTimeout(fn, Math.max(0, left));
    }
  };
  arm(ms);
  return () => clearTimeout(t);
}

/**
 * An AbortController whose signal may have any number of listeners: a run's
 * signal is the parent of one deadline per guest and per call, each removed
 * when it ends, so Node's leak warning (more than 10) would be a false alarm.
 */
export function runController(): AbortController {
  const ac = new AbortController();
  setMaxListeners(0, ac.signal);
  return ac;
}

/** A signal that aborts when any of the given ones does. */
export function anySignal(...signals: (AbortSignal | undefined)[]): { signal: AbortSignal; clear: () => void } {
  return deadline(Infinity, ...signals);
}

/** Resolve after `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      cancel();
      reject(signal?.reason);
    };
    const cancel = after(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Milliseconds on the monotonic clock. */
export function now(): number {
  return performance.now();
}

/** `1.2 s` / `350 ms` */
export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
