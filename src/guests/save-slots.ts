// PARALLEL at stop: it limits saves (each writes a guest's memory to disk),
// never shutdown requests. A guest still waiting for a save slot when only
// its shutdown reserve is left before its deadline is asked to shut down
// instead, outside the limit. The plan estimates the queue at a conservative
// save rate and warns when it cannot finish within the timeouts.
import { mib } from '../util/units.js';

/** The most of a guest's timeout kept for its clean shutdown when it waits for a save slot... */
export const SHUTDOWN_RESERVE_MS = 60_000;
/** ...and never more than this share of its timeout. */
export const SHUTDOWN_RESERVE_SHARE = 0.5;
/** The save rate the plan counts with, per save: conservative (a busy disk, a slow array). */
export const PLAN_SAVE_RATE_BYTES_PER_S = 50 * 1024 * 1024;

/** How long before its deadline a guest still waiting for a save slot is asked to shut down instead: min(SHUTDOWN_RESERVE_MS, SHUTDOWN_RESERVE_SHARE × timeout). */
export function shutdownReserveMs(timeoutMs: number): number {
  return Math.min(SHUTDOWN_RESERVE_MS, timeoutMs * SHUTDOWN_RESERVE_SHARE);
}

/** A guest planned for save, as the queue estimate sees it. */
export interface QueuedSave {
  name: string;
  memoryBytes: number;
  timeoutS: number;
}

/** What the estimate expects for one guest: `late`: no slot before its shutdown reserve (shut down instead); `over`: its save would end after its deadline (aborted, then destroyed). */
export interface SaveEstimate {
  startS: number;
  endS: number;
  fate: 'in-time' | 'late' | 'over';
}

/** Estimate a group's save queue (in the order the guests wait for slots) at PLAN_SAVE_RATE_BYTES_PER_S per save, PARALLEL `parallel` (0 = all). */
export function estimateSaveQueue(saves: readonly QueuedSave[], parallel: number): SaveEstimate[] {
  const slots = new Array<number>(parallel > 0 ? Math.min(parallel, saves.length) : saves.length).fill(0);
  return saves.map((s) => {
    const i = slots.indexOf(Math.min(...slots));
    const startS = slots[i]!;
    const cutS = s.timeoutS - shutdownReserveMs(s.timeoutS * 1000) / 1000;
    if (startS > cutS) return { startS, endS: startS, fate: 'late' };
    const endS = startS + s.memoryBytes / PLAN_SAVE_RATE_BYTES_PER_S;
    slots[i] = Math.min(endS, s.timeoutS);
    return { startS, endS, fate: endS > s.timeoutS ? 'over' : 'in-time' };
  });
}

/** Why the estimate worries about one guest, in words; undefined when it does not. */
export function estimateReason(s: QueuedSave, e: SaveEstimate, parallel: number): string | undefined {
  const rate = `${mib(PLAN_SAVE_RATE_BYTES_PER_S)}/s`;
  if (e.fate === 'late') {
    return `at ${rate} per save and PARALLEL=${parallel}, a save slot may come only ${e.startS.toFixed(0)} s into its group, less than ${(shutdownReserveMs(s.timeoutS * 1000) / 1000).toFixed(0)} s before its timeout of ${s.timeoutS} s: then shut down instead`;
  }
  if (e.fate === 'over') {
    return `at ${rate} its save (up to ${mib(s.memoryBytes)}) may end ${e.endS.toFixed(0)} s into its group, after its timeout of ${s.timeoutS} s: then aborted and destroyed`;
  }
  return undefined;
}
