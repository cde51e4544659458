// What a bench run measures: the full run (npm run bench) or the quick one
// (npm run bench:quick). Overrides: RCL_BENCH_GUESTS="1 4 8", RCL_BENCH_REPS=5;
// for the libvirt scale part RCL_BENCH_SCALE="1 8 64" (guest counts of the
// listing), RCL_BENCH_SCALE_COMPARE="64" (counts whose stop/start are compared
// with the floor) and RCL_BENCH_SCALE_REPS=3.
import type { BenchResults } from './lib/results.js';

/** A run's plan. */
export type BenchConfig = BenchResults['config'] & Required<Pick<BenchResults['config'], 'scaleCounts' | 'scaleCompareCounts' | 'scaleReps' | 'scaleListingReps' | 'scaleMemMiB'>> & {
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
  const scaleCounts = envNumbers('RCL_BENCH_SCALE') ?? (quick ? [1, 8] : [1, 8, 64]);
  const scaleMax = Math.max(...scaleCounts);
  return {
    guestCounts,
    reps: reps ?? (quick ? 1 : 5),
    shutdownReps: reps ?? (quick ? 1 : 5),
    memMiB: 256,
    fill: 150,
    qmpCounts: quick ? [10] : [10, 50, 100],
    qmpReps: quick ? 2 : 3,
    parallelSettings: quick ? [1, 0] : [1, 2, 4, 0],
    parallelReps: quick ? 1 : 1,
    helpSpawns: quick ? 5 : 20,
    reactionPairs: quick ? 3 : 10,
    reactionStops: quick ? 1 : 3,
    scaleCounts,
    // The largest N, and 8 when it is run (a round of 8 costs about 10 s).
    scaleCompareCounts: envNumbers('RCL_BENCH_SCALE_COMPARE') ?? [...new Set([...scaleCounts.filter((n) => n === 8), scaleMax])],
    scaleReps: envNumbers('RCL_BENCH_SCALE_REPS')?.[0] ?? (quick ? 1 : 3),
    scaleListingReps: quick ? 3 : 5,
    scaleMemMiB: 32,
    notes: [],
  };
}
