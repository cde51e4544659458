// stop and start with N filled guests, each round in this order: the floor's
// stop and start, ours (`rc.libvirt stop`, then `rc.libvirt start`, which
// restores what stop saved), then libvirt-guests.sh with ON_SHUTDOWN=suspend
// and its start (ON_BOOT=start). The original script's waiting is modelled
// from the floor's save time of the same round.
import { performance } from 'node:perf_hooks';
import { floorStart, floorStop } from '../lib/floor.js';
import { summarize } from '../lib/stats.js';
import type { StartResult, StopResult } from '../lib/results.js';
import { trace } from '../lib/timed.js';
import { expectActive, expectDaemonsDown, expectInactive, expectManagedSave, pollForAnswer, type LibvirtContext } from './libvirt-context.js';

// The original rc.libvirt's stop, modelled: saves started at once, sleep 2 s, then `virsh list` once a second until empty, then kill libvirtd + sleep 3, virtlogd + sleep 1, virtlockd + sleep 1.
export function originalStopModelMs(floorSaveMs: number): number {
  return originalWaitModelMs(floorSaveMs) + 5000;
}

// The original's wait for guests (stop's saves, guests_shutdown's shutdowns): 2 s, then whole 1 s polls until the work is done.
export function originalWaitModelMs(workMs: number): number {
  return 2000 + Math.max(0, Math.ceil((workMs - 2000) / 1000)) * 1000;
}

/** Samples of one N. */
interface Samples {
  floorSave: number[];
  floorDaemons: number[];
  floor: number[];
  ours: number[];
  lgSuspend: number[];
  model: number[];
  floorAnswer: number[];
  floorAll: number[];
  oursAnswer: number[];
  oursAll: number[];
  lgStart: number[];
}

// Runs `reps` rounds with the first n guests (they must be running, libvirtd up); returns the stop and start results.
export async function benchStopStart(ctx: LibvirtContext, n: number, reps: number): Promise<{ stop: StopResult; start: StartResult; traces: Record<string, [number, string][]> }> {
  const guests = ctx.bed.guests.slice(0, n);
  const s: Samples = { floorSave: [], floorDaemons: [], floor: [], ours: [], lgSuspend: [], model: [], floorAnswer: [], floorAll: [], oursAnswer: [], oursAll: [], lgStart: [] };
  const traces: Record<string, [number, string][]> = {};
  for (let rep = 1; rep <= reps; rep++) {
    await expectActive(guests, 'the previous round');
    const floorRound = async (): Promise<{ stop: number; start: number }> => {
      const fl = await floorStop(guests, ctx.bed.daemons());
      expectDaemonsDown(ctx.bed, 'the floor stop');
      s.floorSave.push(fl.saveMs);
      s.floorDaemons.push(fl.daemonsMs);
      s.floor.push(fl.totalMs);
      s.model.push(originalStopModelMs(fl.saveMs));
      const fs = await floorStart(guests);
      ctx.bed.adoptDaemons();
      await expectActive(guests, 'the floor start');
      s.floorAnswer.push(fs.answerMs);
      s.floorAll.push(fs.allRunningMs);
      return { stop: fl.totalMs, start: fs.allRunningMs };
    };
    const oursRound = async (): Promise<{ stop: number; start: number }> => {
      const stop = await ctx.ours.run(['stop']);
      expectDaemonsDown(ctx.bed, 'rc.libvirt stop');
      s.ours.push(stop.ms);
      const poll = pollForAnswer(50);
      const t0 = performance.now();
      const start = await ctx.ours.run(['start']);
      poll.stop();
      const answered = await poll.answered;
      ctx.bed.adoptDaemons();
      await expectActive(guests, 'rc.libvirt start');
      s.oursAnswer.push(answered - t0);
      s.oursAll.push(start.ms);
      traces[`stop N=${n}`] = trace(stop);
      traces[`start N=${n}`] = trace(start);
      return { stop: stop.ms, start: start.ms };
    };
    // Odd rounds: the floor first; even rounds: ours first, so neither always follows the other.
    const first = rep % 2 === 1 ? await floorRound() : await oursRound();
    const second = rep % 2 === 1 ? await oursRound() : await floorRound();
    const [f, o] = rep % 2 === 1 ? [first, second] : [second, first];

    const lgStop = await ctx.lg.run('stop', { ON_SHUTDOWN: 'suspend' });
    await expectInactive(guests, 'libvirt-guests.sh stop (suspend)');
    await expectManagedSave(guests, 'libvirt-guests.sh stop (suspend)');
    s.lgSuspend.push(lgStop.ms);
    const lgStart = await ctx.lg.run('start', { ON_SHUTDOWN: 'suspend', ON_BOOT: 'start' });
    await expectActive(guests, 'libvirt-guests.sh start');
    s.lgStart.push(lgStart.ms);
    ctx.log(`stop N=${n} round ${rep}: floor ${ms(f.stop)}, ours ${ms(o.stop)}, libvirt-guests ${ms(lgStop.ms)}; start: floor ${ms(f.start)}, ours ${ms(o.start)}, libvirt-guests (restore only) ${ms(lgStart.ms)}`);
  }
  const diff = (a: number[], b: number[]): number[] => a.map((x, i) => x - (b[i] ?? 0));
  return {
    traces,
    stop: {
      n,
      floorSaveMs: summarize(s.floorSave),
      floorDaemonsMs: summarize(s.floorDaemons),
      floorMs: summarize(s.floor),
      oursMs: summarize(s.ours),
      libvirtGuestsSuspendMs: summarize(s.lgSuspend),
      originalModelMs: summarize(s.model),
    },
    start: {
      n,
      floorAnswerMs: summarize(s.floorAnswer),
      floorAllRunningMs: summarize(s.floorAll),
      oursAnswerMs: summarize(s.oursAnswer),
      oursAllRunningMs: summarize(s.oursAll),
      libvirtGuestsStartMs: summarize(s.lgStart),
      floorRestoreMs: summarize(diff(s.floorAll, s.floorAnswer)),
      oursRestoreMs: summarize(diff(s.oursAll, s.oursAnswer)),
    },
  };
}

// Milliseconds as seconds for progress lines.
export function ms(x: number): string {
  return `${(x / 1000).toFixed(2)} s`;
}
