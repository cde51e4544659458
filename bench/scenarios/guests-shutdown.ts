// guests_shutdown with N guests: the floor (every `virsh shutdown` at once,
// done at the last Stopped event), ours (`rc.libvirt guests_shutdown`), and
// once libvirt-guests.sh with ON_SHUTDOWN=shutdown PARALLEL_SHUTDOWN=N. Each
// round starts from the guests' reference images. Ours also gives the
// command line's reaction time: from a guest's Stopped event (timestamped
// by an independent `virsh event`) to our printing its result.
import { floorGuestsShutdown } from '../lib/floor.js';
import { startEventWitness, type EventWitness } from '../lib/events.js';
import { summarize } from '../lib/stats.js';
import type { GuestsShutdownResult } from '../lib/results.js';
import { trace, type TimedRun } from '../lib/timed.js';
import type { BenchGuest } from '../lib/libvirt-bed.js';
import { expectInactive, type LibvirtContext } from './libvirt-context.js';
import { ms, originalWaitModelMs } from './stop-start.js';

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

// Runs `reps` rounds of floor and ours and one of libvirt-guests.sh with the first n guests (libvirtd up); leaves them off.
export async function benchGuestsShutdown(ctx: LibvirtContext, n: number, reps: number): Promise<{ result: GuestsShutdownResult; reactions: number[]; trace: [number, string][] }> {
  const guests = ctx.bed.guests.slice(0, n);
  const floor: number[] = [];
  const ours: number[] = [];
  const model: number[] = [];
  const lg: number[] = [];
  const reactions: number[] = [];
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
      const oursRound = async (): Promise<TimedRun> => {
        await ctx.bed.setRunning(n);
        const run = await ctx.ours.run(['guests_shutdown']);
        await expectInactive(guests, 'rc.libvirt guests_shutdown');
        ours.push(run.ms);
        last = trace(run);
        // The witness may print the last event a moment after our program exited.
        await witness.waitFor((e) => e.name === guests[guests.length - 1]?.name && e.event === 'Stopped' && e.time >= run.startedAt, 10_000).catch(() => undefined);
        reactions.push(...cliReactions(run, guests, witness));
        return run;
      };
      // Odd rounds: the floor first; even rounds: ours first.
      let f: number;
      let run: TimedRun;
      if (rep % 2 === 1) {
        f = await floorRound();
        run = await oursRound();
      } else {
        run = await oursRound();
        f = await floorRound();
      }
      ctx.log(`guests_shutdown N=${n} round ${rep}: floor ${ms(f)}, ours ${ms(run.ms)}`);
    }
    await ctx.bed.setRunning(n);
    const run = await ctx.lg.run('stop', { ON_SHUTDOWN: 'shutdown', PARALLEL_SHUTDOWN: n });
    await expectInactive(guests, 'libvirt-guests.sh stop (shutdown)');
    lg.push(run.ms);
    ctx.log(`guests_shutdown N=${n}: libvirt-guests.sh (PARALLEL_SHUTDOWN=${n}) ${ms(run.ms)}`);
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
    trace: last,
  };
}
