// stop and start with N filled guests. Each round runs the floor's stop and
// start, ours (`rc.libvirt -v stop`, then `rc.libvirt -v start`, which
// restores what stop saved) and libvirt-guests.sh with ON_SHUTDOWN=suspend
// and its start (ON_BOOT=start), in an order that rotates every round. The
// original script's waiting is modelled from the floor's save time of the
// same round.
import { performance } from 'node:perf_hooks';
import { addFirstAction, type FirstActionSamples } from '../lib/first-action.js';
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

/** Who runs in a round. */
export type Contender = 'floor' | 'ours' | 'libvirt-guests';

// The order of round `rep` (1-based): the list rotated by rep − 1, so each runs first, second, ... in turn.
export function roundOrder<T>(list: readonly T[], rep: number): T[] {
  const k = (((rep - 1) % list.length) + list.length) % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

// Runs `reps` rounds with the first n guests (they must be running, libvirtd up); returns the stop and start results.
export async function benchStopStart(ctx: LibvirtContext, n: number, reps: number): Promise<{ stop: StopResult; start: StartResult; firstStop: FirstActionSamples; firstStart: FirstActionSamples; traces: Record<string, [number, string][]> }> {
  const guests = ctx.bed.guests.slice(0, n);
  const s: Samples = { floorSave: [], floorDaemons: [], floor: [], ours: [], lgSuspend: [], model: [], floorAnswer: [], floorAll: [], oursAnswer: [], oursAll: [], lgStart: [] };
  const firstStop: FirstActionSamples = { ms: [], afterAnswerMs: [] };
  const firstStart: FirstActionSamples = { ms: [], afterAnswerMs: [] };
  const traces: Record<string, [number, string][]> = {};
  for (let rep = 1; rep <= reps; rep++) {
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
      const stop = await ctx.ours.run(['stop'], { stamped: true });
      expectDaemonsDown(ctx.bed, 'rc.libvirt stop');
      s.ours.push(stop.ms);
      const poll = pollForAnswer(50);
      const t0 = performance.now();
      const start = await ctx.ours.run(['start'], { stamped: true });
      poll.stop();
      const answered = await poll.answered;
      ctx.bed.adoptDaemons();
      await expectActive(guests, 'rc.libvirt start');
      s.oursAnswer.push(answered - t0);
      s.oursAll.push(start.ms);
      const stopTrace = trace(stop);
      const startTrace = trace(start);
      addFirstAction(firstStop, stopTrace);
      addFirstAction(firstStart, startTrace, true);
      traces[`stop N=${n}`] = stopTrace;
      traces[`start N=${n}`] = startTrace;
      return { stop: stop.ms, start: start.ms };
    };
    const lgRound = async (): Promise<{ stop: number; start: number }> => {
      const lgStop = await ctx.lg.run('stop', { ON_SHUTDOWN: 'suspend' });
      await expectInactive(guests, 'libvirt-guests.sh stop (suspend)');
      await expectManagedSave(guests, 'libvirt-guests.sh stop (suspend)');
      s.lgSuspend.push(lgStop.ms);
      const lgStart = await ctx.lg.run('start', { ON_SHUTDOWN: 'suspend', ON_BOOT: 'start' });
      await expectActive(guests, 'libvirt-guests.sh start');
      s.lgStart.push(lgStart.ms);
      return { stop: lgStop.ms, start: lgStart.ms };
    };
    const rounds: Record<Contender, () => Promise<{ stop: number; start: number }>> = { floor: floorRound, ours: oursRound, 'libvirt-guests': lgRound };
    // The order rotates every round, so none always runs first or always follows another.
    const got: Partial<Record<Contender, { stop: number; start: number }>> = {};
    for (const who of roundOrder<Contender>(['floor', 'ours', 'libvirt-guests'], rep)) {
      await expectActive(guests, 'the previous round');
      got[who] = await rounds[who]();
    }
    const f = got.floor ?? { stop: NaN, start: NaN };
    const o = got.ours ?? { stop: NaN, start: NaN };
    const l = got['libvirt-guests'] ?? { stop: NaN, start: NaN };
    ctx.log(`stop N=${n} round ${rep}: floor ${ms(f.stop)}, ours ${ms(o.stop)}, libvirt-guests ${ms(l.stop)}; start: floor ${ms(f.start)}, ours ${ms(o.start)}, libvirt-guests (restore only) ${ms(l.start)}`);
  }
  const diff = (a: number[], b: number[]): number[] => a.map((x, i) => x - (b[i] ?? 0));
  return {
    traces,
    firstStop,
    firstStart,
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
