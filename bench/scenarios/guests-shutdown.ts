// guests_shutdown with N guests: the floor (every `virsh shutdown` at once,
// done at the last Stopped event), ours (`rc.libvirt -v guests_shutdown`) and
// libvirt-guests.sh with ON_SHUTDOWN=shutdown PARALLEL_SHUTDOWN=N, in an order
// that rotates every round. Each run starts from the guests' reference
// images. Ours also gives the
// command line's reaction time: from a guest's Stopped event (timestamped
// by an independent `virsh event`) to our printing its result.
import { addFirstAction, type FirstActionSamples } from '../lib/first-action.js';
import { floorGuestsShutdown } from '../lib/floor.js';
import { startEventWitness, type EventWitness } from '../lib/events.js';
import { summarize } from '../lib/stats.js';
import type { GuestsShutdownResult } from '../lib/results.js';
import { trace, type TimedRun } from '../lib/timed.js';
import type { BenchGuest } from '../lib/libvirt-bed.js';
import { expectInactive, type LibvirtContext } from './libvirt-context.js';
import { ms, originalWaitModelMs, roundOrder, type Contender } from './stop-start.js';

// For each guest: ms from its Stopped event to the line where our program printed its result (`NAME: shutdown (1.2 s)`).
export function cliReactions(run: TimedRun, guests: readonly BenchGuest[], witness: EventWitness): number[] {
  const out: number[] = [];
  for (const g of guests) {
    const stopped = witness.events.find((e) => e.name === g.name && e.event === 'Stopped' && e.time >= run.startedAt - 5);
    const line = run.lines.find((l) => l.text.startsWith(`${g.name}: `) && /\(\d+(\.\d+)? s\)\s*$/.test(l.text));
    if (stopped && line) out.push(line.at - stopped.time);
  }
  return out;
}

// Runs `reps` rounds of the floor, ours and libvirt-guests.sh with the first n guests (libvirtd up); leaves them off.
export async function benchGuestsShutdown(ctx: LibvirtContext, n: number, reps: number): Promise<{ result: GuestsShutdownResult; reactions: number[]; first: FirstActionSamples; trace: [number, string][] }> {
  const guests = ctx.bed.guests.slice(0, n);
  const floor: number[] = [];
  const ours: number[] = [];
  const model: number[] = [];
  const lg: number[] = [];
  const reactions: number[] = [];
  const first: FirstActionSamples = { ms: [], afterAnswerMs: [] };
  let last: [number, string][] = [];
  const witness = await startEventWitness();
  try {
    for (let rep = 1; rep <= reps; rep++) {
      const floorRound = async (): Promise<number> => {
        await ctx.bed.setRunning(n);
        const f = await floorGuestsShutdown(guests, witness);
        await expectInactive(guests, 'the floor guests_shutdown');
        floor.push(f);
        model.push(originalWaitModelMs(f));
        return f;
      };
      const oursRound = async (): Promise<number> => {
        await ctx.bed.setRunning(n);
        const run = await ctx.ours.run(['guests_shutdown'], { stamped: true });
        await expectInactive(guests, 'rc.libvirt guests_shutdown');
        ours.push(run.ms);
        last = trace(run);
        addFirstAction(first, last);
        // The witness may print the last event a moment after our program exited.
        await witness.waitFor((e) => e.name === guests[guests.length - 1]?.name && e.event === 'Stopped' && e.time >= run.startedAt, 10_000).catch(() => undefined);
        reactions.push(...cliReactions(run, guests, witness));
        return run.ms;
      };
      const lgRound = async (): Promise<number> => {
        await ctx.bed.setRunning(n);
        const run = await ctx.lg.run('stop', { ON_SHUTDOWN: 'shutdown', PARALLEL_SHUTDOWN: n });
        await expectInactive(guests, 'libvirt-guests.sh stop (shutdown)');
        lg.push(run.ms);
        return run.ms;
      };
      const rounds: Record<Contender, () => Promise<number>> = { floor: floorRound, ours: oursRound, 'libvirt-guests': lgRound };
      // The order rotates every round, so none always runs first or always follows another.
      const got: Partial<Record<Contender, number>> = {};
      for (const who of roundOrder<Contender>(['floor', 'ours', 'libvirt-guests'], rep)) got[who] = await rounds[who]();
      ctx.log(`guests_shutdown N=${n} round ${rep}: floor ${ms(got.floor ?? NaN)}, ours ${ms(got.ours ?? NaN)}, libvirt-guests.sh (PARALLEL_SHUTDOWN=${n}) ${ms(got['libvirt-guests'] ?? NaN)}`);
    }
  } finally {
    await witness.close();
  }
  return {
    result: {
      n,
      floorMs: summarize(floor),
      oursMs: summarize(ours),
      libvirtGuestsShutdownMs: summarize(lg),
      originalModelMs: summarize(model),
    },
    reactions,
    first,
    trace: last,
  };
}
