// libvirt at scale, on our own libvirtd under the host-wide lock: small
// guests that sit in their firmware (bench/lib/firmware-guests.ts), defined
// and started in growing numbers. At each listing count: the virsh processes
// one `rc.libvirt plan --json` spawns (counted through a VIRSH wrapper; these
// do not depend on the machine's noise) and its wall time (without the
// wrapper). At each compare count: `rc.libvirt stop` and `start` against the
// floor (bench/lib/floor.ts), in turns, with our peak RSS.
import { startLibvirtDaemons, stopLibvirtDaemons } from '../../test/helpers/daemons.js';
import type { BenchConfig } from '../config.js';
import { firmwareGuests, type FirmwareGuests } from '../lib/firmware-guests.js';
import { floorStart, floorStop } from '../lib/floor.js';
import { takeLibvirtd, type OwnDaemons } from '../lib/libvirt-bed.js';
import { prepareOurs, type Ours } from '../lib/ours.js';
import type { BenchResults, LibvirtScaleResult, ScaleCompareResult, ScaleListingResult } from '../lib/results.js';
import { summarize } from '../lib/stats.js';
import { checkRun, trace, type TimedRun } from '../lib/timed.js';
import { virshCounter, type VirshCounter } from '../lib/virsh-counter.js';
import { expectActive, expectDaemonsDown } from './libvirt-context.js';
import { ms, roundOrder } from './stop-start.js';

const KIB_IN_MIB = 1024;
// Our stop's deadline per guest: a firmware guest saves in well under a minute even 64 at once on a loaded host; a save that fails is then not waited on for the default 300 s (such a guest ignores its power button, so the fallback shutdown waits out the whole deadline).
const SCALE_ENV = { TIMEOUT: '120' };

// How many guests a `plan --json` output lists (its `guests` array), or 0 when it is not such JSON.
function plannedGuests(json: string): number {
  try {
    const plan = JSON.parse(json) as { guests?: unknown };
    return Array.isArray(plan.guests) ? plan.guests.length : 0;
  } catch {
    return 0;
  }
}

// What a `plan --json` that exited non-zero said on stderr (its first lines), or undefined when it exited 0.
function planFailure(run: TimedRun): string | undefined {
  if (run.code === 0) return undefined;
  const said = run.lines.filter((l) => l.stream === 'err').map((l) => l.text.trim()).filter(Boolean).slice(0, 3);
  return `exited ${run.timedOut ? 'on the timeout' : (run.code ?? run.signal)}${said.length > 0 ? `: ${said.join(' / ')}` : ''}`;
}

// The listing with the first n guests running: one counted run, then `reps` timed ones. A plan that exits non-zero (a guest it could not describe) still lists the others: it is timed and counted, and said in `failures`.
async function benchListing(ours: Ours, counter: VirshCounter, n: number, reps: number, log: (msg: string) => void): Promise<ScaleListingResult> {
  await counter.take();
  const counted = await ours.run(['plan', '--json'], { extraEnv: { VIRSH: counter.path }, allowFailure: true });
  const calls = await counter.take();
  const listed = plannedGuests(counted.lines.filter((l) => l.stream === 'out').map((l) => l.text).join('\n'));
  if (calls.total === 0) throw new Error(`plan --json with VIRSH=${counter.path} ran no virsh through it: is VIRSH honoured?`);
  if (listed < n) throw new Error(`plan --json listed ${listed} of the ${n} guests (${planFailure(counted) ?? 'exited 0'})`);
  const failures: string[] = [];
  const failure = planFailure(counted);
  if (failure) failures.push(`counted run ${failure}`);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const run = await ours.run(['plan', '--json'], { allowFailure: true });
    const f = planFailure(run);
    if (f) failures.push(`run ${i + 1} ${f}`);
    times.push(run.ms);
  }
  const result: ScaleListingResult = { n, virshCalls: calls.total, virshByCommand: calls.byCommand, ms: summarize(times) };
  if (failures.length > 0) result.failures = failures;
  log(`listing N=${n}: ${calls.total} virsh processes (${Object.entries(calls.byCommand).map(([c, k]) => `${c} ${k}`).join(', ')}); plan --json median ${ms(result.ms.median)}${failures.length > 0 ? `; ${failures.length} run(s) exited non-zero: ${failures[0]}` : ''}`);
  return result;
}

// stop and start of the first n guests (running, daemons up), ours and the floor in turns; leaves them running.
async function benchCompare(ours: Ours, own: OwnDaemons, fw: FirmwareGuests, n: number, reps: number, traces: BenchResults['traces'], log: (msg: string) => void, failed: (what: string, err: Error) => Promise<void>): Promise<ScaleCompareResult> {
  const guests = fw.guests.slice(0, n);
  const keep = (key: string, run: TimedRun): TimedRun => {
    traces[key] = trace(run);
    return run;
  };
  const s = { floorStop: [] as number[], floorStart: [] as number[], oursStop: [] as number[], oursStart: [] as number[], stopRss: [] as number[], startRss: [] as number[] };
  for (let rep = 1; rep <= reps; rep++) {
    const got: Record<string, number> = {};
    for (const who of roundOrder(['floor', 'ours'] as const, rep)) {
      // A failed run costs its own samples, not the other rounds: recorded, then back to all running.
      try {
        await expectActive(guests, 'the previous round');
        if (who === 'floor') {
          const fl = await floorStop(guests, own.daemons());
          expectDaemonsDown(own, 'the floor stop');
          s.floorStop.push((got.floorStop = fl.totalMs));
          const fs = await floorStart(guests);
          own.adoptDaemons();
          await expectActive(guests, 'the floor start');
          s.floorStart.push((got.floorStart = fs.allRunningMs));
        } else {
          // Each run's output goes to the JSON's traces before its exit status is checked.
          const stop = checkRun(keep(`scale stop N=${n}`, await ours.run(['stop'], { measureRss: true, allowFailure: true, extraEnv: SCALE_ENV })), 'rc.libvirt stop');
          expectDaemonsDown(own, 'rc.libvirt stop');
          s.oursStop.push((got.oursStop = stop.ms));
          if (stop.peakRssKiB !== undefined) s.stopRss.push(stop.peakRssKiB / KIB_IN_MIB);
          const start = checkRun(keep(`scale start N=${n}`, await ours.run(['start'], { measureRss: true, allowFailure: true, extraEnv: SCALE_ENV })), 'rc.libvirt start');
          own.adoptDaemons();
          await expectActive(guests, 'rc.libvirt start');
          s.oursStart.push((got.oursStart = start.ms));
          if (start.peakRssKiB !== undefined) s.startRss.push(start.peakRssKiB / KIB_IN_MIB);
        }
      } catch (err) {
        await failed(`scale stop/start N=${n} round ${rep} (${who})`, err as Error);
      }
    }
    log(`scale N=${n} round ${rep}: stop floor ${ms(got.floorStop ?? NaN)}, ours ${ms(got.oursStop ?? NaN)}; start floor ${ms(got.floorStart ?? NaN)}, ours ${ms(got.oursStart ?? NaN)}`);
  }
  return {
    n,
    floorStopMs: summarize(s.floorStop),
    oursStopMs: summarize(s.oursStop),
    floorStartMs: summarize(s.floorStart),
    oursStartMs: summarize(s.oursStart),
    oursStopPeakRssMiB: summarize(s.stopRss),
    oursStartPeakRssMiB: summarize(s.startRss),
  };
}

// Makes sure libvirtd runs and that whatever daemons run now are recorded as ours (a failed `rc.libvirt start` may have started them), so the cleanup stops them.
async function daemonsUp(own: OwnDaemons): Promise<void> {
  own.adoptDaemons();
  if (own.daemons().length < 3) {
    await startLibvirtDaemons();
    own.adoptDaemons();
  }
}

// Runs the scale part into results.libvirtScale; a failing step is recorded and the next count goes on (a failed setup ends the part).
export async function benchLibvirtScale(results: BenchResults, config: BenchConfig, log: (msg: string) => void): Promise<void> {
  const ours = await prepareOurs('rcl-bench-scale-');
  const counter = await virshCounter(ours.dir);
  const scale: LibvirtScaleResult = { memMiB: config.scaleMemMiB, listing: [], compare: [] };
  results.libvirtScale = scale;
  let own: OwnDaemons | undefined;
  let fw: FirmwareGuests | undefined;
  // Guests are removed through libvirtd: start it again if a round left it down; then stop our daemons and release the lock.
  const cleanup = async (): Promise<void> => {
    try {
      if (own && fw) {
        await daemonsUp(own);
        await fw.removeAll();
      }
    } finally {
      if (own) await stopLibvirtDaemons();
      await ours.close();
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: cleaning up`);
    void cleanup().catch((e: Error) => log(e.message)).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    own = await takeLibvirtd(log);
    fw = firmwareGuests({ prefix: 'rcl-scale-', memMiB: config.scaleMemMiB, dir: ours.dir });
    const counts = [...new Set([...config.scaleCounts, ...config.scaleCompareCounts])].sort((a, b) => a - b);
    for (const n of counts) {
      log(`-- scale: ${n} firmware guests (${config.scaleMemMiB} MiB, TCG)`);
      await fw.grow(n);
      const failed = async (what: string, err: Error): Promise<void> => {
        results.errors.push(`${what}: ${err.message}`);
        log(`FAILED ${what}: ${err.message}`);
        // Back to daemons up and the guests running for what comes next.
        if (own) await daemonsUp(own);
        await fw?.ensureRunning();
      };
      const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
        try {
          await fn();
        } catch (err) {
          await failed(what, err as Error);
        }
      };
      if (config.scaleCounts.includes(n)) {
        await step(`scale listing N=${n}`, async () => {
          const l = await benchListing(ours, counter, n, config.scaleListingReps, log);
          scale.listing.push(l);
          for (const f of l.failures ?? []) results.errors.push(`scale listing N=${n}: rc.libvirt plan --json ${f}`);
        });
      }
      if (config.scaleCompareCounts.includes(n) && own) {
        const daemons = own;
        const guests = fw;
        await step(`scale stop/start N=${n}`, async () => void scale.compare.push(await benchCompare(ours, daemons, guests, n, config.scaleReps, results.traces, log, failed)));
      }
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    log('cleaning up the scale guests and daemons');
    await cleanup();
  }
}
