// Everything on libvirt, under the host-wide lock: the guests are booted
// once (the largest N) and kept as reference images; then for each N the
// stop/start rounds and the guests_shutdown rounds, then PARALLEL with the
// largest N, then the driver's reaction time; then all of it is removed.
import type { BenchConfig } from '../config.js';
import { openLibvirtBed, type LibvirtBed } from '../lib/libvirt-bed.js';
import { prepareLibvirtGuests } from '../lib/libvirt-guests.js';
import { prepareOurs } from '../lib/ours.js';
import type { BenchResults } from '../lib/results.js';
import { summarize } from '../lib/stats.js';
import { benchGuestsShutdown } from './guests-shutdown.js';
import { recover, type LibvirtContext } from './libvirt-context.js';
import { benchParallel } from './parallel.js';
import { benchReaction } from './reaction.js';
import { benchStopStart } from './stop-start.js';

// Runs the libvirt scenarios into `results`; one failing part is recorded and the rest go on.
export async function benchLibvirt(results: BenchResults, config: BenchConfig, log: (msg: string) => void): Promise<void> {
  const max = Math.max(...config.guestCounts);
  const ours = await prepareOurs();
  const lg = await prepareLibvirtGuests();
  let bed: LibvirtBed | undefined;
  // Ctrl-C or SIGTERM: remove guests and daemons before leaving.
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: cleaning up`);
    void (async () => {
      await bed?.close().catch((e: Error) => log(e.message));
      await ours.close();
      await lg.close();
      process.exit(130);
    })();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    bed = await openLibvirtBed({ count: max, memMiB: config.memMiB, fill: config.fill, log });
    const ctx: LibvirtContext = { bed, ours, lg, log };
    const cliReactions: number[] = [];
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      log(`-- ${what}`);
      try {
        await fn();
      } catch (err) {
        results.errors.push(`${what}: ${(err as Error).message}`);
        log(`FAILED ${what}: ${(err as Error).message}`);
        await recover(ctx);
      }
    };
    for (const n of config.guestCounts) {
      await step(`stop/start N=${n}`, async () => {
        await ctx.bed.setRunning(n);
        const r = await benchStopStart(ctx, n, config.reps);
        results.stop.push(r.stop);
        results.start.push(r.start);
        (results.firstAction ??= []).push(
          { scenario: 'stop', n, ms: summarize(r.firstStop.ms) },
          { scenario: 'start', n, ms: summarize(r.firstStart.ms), afterAnswerMs: summarize(r.firstStart.afterAnswerMs) },
        );
        Object.assign(results.traces, r.traces);
      });
      await step(`guests_shutdown N=${n}`, async () => {
        const r = await benchGuestsShutdown(ctx, n, config.shutdownReps);
        results.guestsShutdown.push(r.result);
        cliReactions.push(...r.reactions);
        (results.firstAction ??= []).push({ scenario: 'guests_shutdown', n, ms: summarize(r.first.ms) });
        results.traces[`guests_shutdown N=${n}`] = r.trace;
      });
    }
    results.reaction.cliMs = summarize(cliReactions);
    await step(`PARALLEL N=${max}`, async () => {
      await ctx.bed.setRunning(max);
      results.parallel.push(...(await benchParallel(ctx, max, config.parallelSettings, config.parallelReps, results.traces)));
    });
    await step('reaction', async () => {
      Object.assign(results.reaction, await benchReaction(ctx, config.reactionPairs, config.reactionStops));
      await ctx.bed.setRunning(0);
    });
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    log('cleaning up guests, images and daemons');
    try {
      await bed?.close();
    } finally {
      await ours.close();
      await lg.close();
    }
  }
}
