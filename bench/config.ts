// What a bench run measures: the full run (npm run bench) or the quick one
// (npm run bench:quick); RCL_BENCH_GUESTS="1 4 8" and RCL_BENCH_REPS=3 override.
import type { BenchResults } from './lib/results.js';

/** A run's plan. */
export type BenchConfig = BenchResults['config'] & {
  reactionPairs: number;
  reactionStops: number;
  parallelReps: number;
};

// Whole numbers from a space-separated environment variable, or undefined.
function envNumbers(name: string): number[] | undefined {
  const v = process.env[name]?.trim();
  if (!v) return undefined;
  const nums = v.split(/\s+/).map(Number);
  if (nums.some((x) => !Number.isInteger(x) || x < 0)) throw new Error(`${name}: whole numbers separated by spaces, got ${JSON.stringify(v)}`);
  return nums;
}

// The plan for a mode.
export function benchConfig(mode: 'quick' | 'full'): BenchConfig {
  const quick = mode === 'quick';
  const reps = envNumbers('RCL_BENCH_REPS')?.[0];
  const guestCounts = envNumbers('RCL_BENCH_GUESTS') ?? (quick ? [2] : [1, 4, 8]);
  return {
    guestCounts,
    reps: reps ?? (quick ? 1 : 3),
    shutdownReps: reps ?? (quick ? 1 : 3),
    memMiB: 256,
    fill: 150,
    qmpCounts: quick ? [10] : [10, 50, 100],
    qmpReps: quick ? 2 : 3,
    parallelSettings: quick ? [1, 0] : [1, 2, 4, 0],
    parallelReps: quick ? 1 : 2,
    helpSpawns: quick ? 5 : 20,
    reactionPairs: quick ? 3 : 10,
    reactionStops: quick ? 1 : 3,
    notes: [],
  };
}
