// Order groups one after another, the guests of a group concurrently under
// p-limit (PARALLEL, 0 = all), across every connection at once. Each guest's
// deadline counts from the moment its group starts.
import pLimit from 'p-limit';
import { errorMessage } from '../util/error-message.js';
import { now, sleep } from '../util/deadline.js';

/** One guest's work in a batch. */
export interface GroupTask<T> {
  order: number;
  /** Milliseconds from its group's start to its deadline. */
  timeoutMs: number;
  /** Do the work; `deadlineAt` is on the monotonic clock (util/deadline `now()`). Must not throw: results are data. */
  run: (deadlineAt: number) => Promise<T>;
  /** The result of a guest that never got its turn (interrupted), or whose `run` threw anyway. */
  skip: (reason: string) => T;
}

/** How a batch runs. */
export interface GroupOptions {
  /** `desc` at stop, `asc` at start. */
  direction: 'asc' | 'desc';
  /** Guests at once within a group; 0 = all. */
  parallel: number;
  /** Aborts on SIGINT/SIGTERM: guests still queued are dropped (skipped); running ones are the tasks' business. */
  signal: AbortSignal;
  /** Milliseconds between the launches of two guests (START_DELAY at boot). */
  gapMs?: number;
  /** Told when a group starts. */
  onGroup?: (order: number, count: number) => void;
}

/** Run the tasks group by group; resolves with their results in the tasks' order. */
export async function runInGroups<T>(tasks: readonly GroupTask<T>[], opts: GroupOptions): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  const orders = [...new Set(tasks.map((t) => t.order))].sort((a, b) => (opts.direction === 'asc' ? a - b : b - a));
  let lastLaunch = -Infinity;
  for (const order of orders) {
    const members = tasks.map((t, i) => ({ t, i })).filter(({ t }) => t.order === order);
    if (opts.signal.aborted) {
      for (const { t, i } of members) results[i] = t.skip('interrupted before its turn');
      continue;
    }
    opts.onGroup?.(order, members.length);
    const groupStart = now();
    const limit = pLimit({ concurrency: opts.parallel > 0 ? opts.parallel : Infinity, rejectOnClear: true });
    const onAbort = (): void => limit.clearQueue();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    // Once the longest deadline of the group has passed, waiting for a slot is pointless: let everyone run.
    const maxTimeout = Math.max(...members.map(({ t }) => t.timeoutMs));
    const release = setTimeout(() => {
      if (limit.pendingCount > 0) limit.concurrency = Infinity;
    }, maxTimeout);
    try {
      await Promise.all(members.map(async ({ t, i }) => {
        try {
          results[i] = await limit(async () => {
            if (opts.gapMs && opts.gapMs > 0) {
              const wait = lastLaunch + opts.gapMs - now();
              lastLaunch = Math.max(now(), lastLaunch + opts.gapMs);
              if (wait > 0) await sleep(wait, opts.signal);
            }
            if (opts.signal.aborted) return t.skip('interrupted before its turn');
            return t.run(groupStart + t.timeoutMs);
          });
        } catch (err) {
          results[i] = t.skip(opts.signal.aborted ? 'interrupted before its turn' : `internal error: ${errorMessage(err)}`);
        }
      }));
    } finally {
      clearTimeout(release);
      opts.signal.removeEventListener('abort', onAbort);
    }
  }
  return results;
}
