// PARALLEL: `rc.libvirt stop --parallel P` of the filled guests for each
// setting (0 = all at once), each followed by `rc.libvirt start`, to see
// which default serves.
import { summarize } from '../lib/stats.js';
import type { ParallelResult } from '../lib/results.js';
import { trace } from '../lib/timed.js';
import { expectActive, expectDaemonsDown, type LibvirtContext } from './libvirt-context.js';
import { ms } from './stop-start.js';

// Runs `reps` rounds over the settings with the first n guests (running, libvirtd up).
export async function benchParallel(ctx: LibvirtContext, n: number, settings: readonly number[], reps: number, traces: Record<string, [number, string][]>): Promise<ParallelResult[]> {
  const guests = ctx.bed.guests.slice(0, n);
  const samples = new Map<number, number[]>(settings.map((p) => [p, []]));
  for (let rep = 1; rep <= reps; rep++) {
    // Rotate the order each round, so no setting always runs first.
    const order = settings.map((_, i) => settings[(i + rep - 1) % settings.length] ?? 0);
    for (const p of order) {
      await expectActive(guests, 'the previous round');
      const stop = await ctx.ours.run(['stop', '--parallel', String(p)]);
      expectDaemonsDown(ctx.bed, `rc.libvirt stop --parallel ${p}`);
      samples.get(p)?.push(stop.ms);
      traces[`stop --parallel ${p} N=${n}`] = trace(stop);
      await ctx.ours.run(['start']);
      ctx.bed.adoptDaemons();
      ctx.log(`PARALLEL=${p} N=${n} round ${rep}: stop ${ms(stop.ms)}`);
    }
  }
  return settings.map((p) => ({ parallel: p, n, oursMs: summarize(samples.get(p) ?? []) }));
}
