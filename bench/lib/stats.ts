// Small statistics for the benchmark samples: median, min, max, ratios.

/** A summary of repeated samples (milliseconds or any unit). */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
  samples: number[];
}

// The median of the samples (the mean of the middle two for an even count); NaN when empty.
export function median(samples: readonly number[]): number {
  if (samples.length === 0) return Number.NaN;
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

// Median, min and max of the samples, rounded to whole units.
export function summarize(samples: readonly number[]): Summary {
  const round = (x: number): number => Math.round(x * 10) / 10;
  return {
    median: round(median(samples)),
    min: round(samples.length ? Math.min(...samples) : Number.NaN),
    max: round(samples.length ? Math.max(...samples) : Number.NaN),
    n: samples.length,
    samples: samples.map(round),
  };
}

// a / b rounded to two decimals, or NaN when either is missing.
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return Number.NaN;
  return Math.round((a / b) * 100) / 100;
}
