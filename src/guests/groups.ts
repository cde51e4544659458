// Order groups one after another, the guests of a group concurrently, across
// every connection at once. Each guest's deadline counts from the moment its
// group starts. PARALLEL is a number of slots per group: at start and at
// reboot a guest holds one for its whole step; at stop only a save holds one
// (the ladder takes it), so shutdown requests are never held back by it.
import { errorMessage } from '../util/error-message.js';
import { now, sleep } from '../util/deadline.js';

/** The PARALLEL slots of one order group. */
export interface Slots {
  /** Wait for a slot; resolves with the function that frees it, or rejects with the signal's reason when `signal` aborts first (the place in the queue is given up). */
  take(signal: AbortSignal): Promise<() => void>;
}

/** One guest's work in a batch. */
export interface GroupTask<T> {
  order: number;
  /** Milliseconds from its group's start to its deadline. */
  timeoutMs: number;
  /**
   * Do the work; `deadlineAt` is on the monotonic clock (util/deadline `now()`).
   * `slots`: the group's slots, for a task that limits only part of its work
   * (`limit: 'inside'`). Must not throw: results are data.
   */
  run: (deadlineAt: number, slots: Slots) => Promise<T>;
  /** The result of a guest that never got its turn (interrupted), or whose `run` threw anyway. */
  skip: (reason: string) => T;
}

/** How a batch runs. */
export interface GroupOptions {
  /** `desc` at stop, `asc` at start. */
  direction: 'asc' | 'desc';
  /** Slots per group; 0 = no limit. */
  parallel: number;
  /**
   * `task` (default): a guest's whole step waits for a slot and holds it;
   * `inside`: every step begins at once and takes a slot itself for the part
   * that is limited (stop: the save).
   */
  limit?: 'task' | 'inside';
  /** Aborts on SIGINT/SIGTERM: guests still queued are dropped (skipped); running ones are the tasks' business. */
  signal: AbortSignal;
  /** Milliseconds between the launches of two guests (START_DELAY at boot; `limit: 'task'` only). */
  gapMs?: number;
  /** Told when a group starts. */
  onGroup?: (order: number, count: number) => void;
  /** Awaited before a group's tasks begin (after `onGroup`, before its deadlines start counting); must not throw. */
  beforeGroup?: (order: number) => Promise<void>;
}

/** Slots that can be opened up (no limit any more). */
interface GroupSlots extends Slots {
  openAll(): void;
}

/** `capacity` slots (0 = no limit), handed out first come, first served. */
export function createSlots(capacity: number): GroupSlots {
  let free = capacity > 0 ? capacity : Infinity;
  const queue: (() => void)[] = [];
  const grant = (): void => {
    while (free > 0 && queue.length > 0) {
      free--;
      queue.shift()!();
    }
  };
  return {
    take(signal) {
      return new Promise((resolve, reject) => {
        if (signal.aborted) {
          reject(signal.reason);
          return;
        }
        let freed = false;
        const release = (): void => {
          if (freed) return;
          freed = true;
          free++;
          grant();
        };
        const onAbort = (): void => {
          const i = queue.indexOf(go);
          if (i >= 0) queue.splice(i, 1);
          reject(signal.reason);
        };
        const go = (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve(release);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        queue.push(go);
        grant();
      });
    },
    openAll() {
      free = Infinity;
      grant();
    },
  };
}

/** Slots without a limit. */
const UNLIMITED: Slots = { take: async () => () => undefined };

/** Run the tasks group by group; resolves with their results in the tasks' order. */
export async function runInGroups<T>(tasks: readonly GroupTask<T>[], opts: GroupOptions): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  const orders = [...new Set(tasks.map((t) => t.order))].sort((a, b) => (opts.direction === 'asc' ? a - b : b - a));
  const inside = opts.limit === 'inside';
  let lastLaunch = -Infinity;
  for (const order of orders) {
    const members = tasks.map((t, i) => ({ t, i })).filter(({ t }) => t.order === order);
    if (opts.signal.aborted) {
      for (const { t, i } of members) results[i] = t.skip('interrupted before its turn');
      continue;
    }
    opts.onGroup?.(order, members.length);
    await opts.beforeGroup?.(order);
    const groupStart = now();
    const slots = createSlots(opts.parallel);
    // Once the longest deadline of the group has passed, waiting for a slot is pointless: let everyone run.
    const maxTimeout = Math.max(...members.map(({ t }) => t.timeoutMs));
    const release = setTimeout(() => slots.openAll(), maxTimeout);
    try {
      await Promise.all(members.map(async ({ t, i }) => {
        try {
          if (inside) {
            results[i] = await t.run(groupStart + t.timeoutMs, slots);
            return;
          }
          const free = await slots.take(opts.signal);
          try {
            if (opts.gapMs && opts.gapMs > 0) {
              const wait = lastLaunch + opts.gapMs - now();
              lastLaunch = Math.max(now(), lastLaunch + opts.gapMs);
              if (wait > 0) await sleep(wait, opts.signal);
            }
            results[i] = opts.signal.aborted ? t.skip('interrupted before its turn') : await t.run(groupStart + t.timeoutMs, UNLIMITED);
          } finally {
            free();
          }
        } catch (err) {
          results[i] = t.skip(opts.signal.aborted ? 'interrupted before its turn' : `internal error: ${errorMessage(err)}`);
        }
      }));
    } finally {
      clearTimeout(release);
    }
  }
  return results;
}
