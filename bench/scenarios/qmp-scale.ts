// The qmp driver at scale: N guests of `qemu-system-x86_64 -machine none`
// (no guest at all, so they start in ~30 ms and save almost nothing; they
// have no ACPI, which does not matter to a save). Each round starts them
// afresh with `rc.libvirt --driver qmp start` (nothing saved) and saves them
// with `... stop`: total time and our process's peak RSS. Then one start
// restores what the last stop saved. Needs no libvirtd. Every QEMU left
// behind is found by our private folder in its command line and ended by PID.
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { identifyPid, terminateProcess } from '../../test/helpers/process.js';
import { prepareOurs } from '../lib/ours.js';
import { summarize } from '../lib/stats.js';
import type { QmpScaleResult } from '../lib/results.js';
import { trace, type TimedRun } from '../lib/timed.js';
import { ms } from './stop-start.js';

// PIDs of processes whose command line mentions `dir` (our private folder), except this process.
export function processesUsing(dir: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'latin1').includes(dir)) pids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

// Counts the QEMU processes that run out of our folder.
function runningQemus(dir: string): number {
  return processesUsing(dir).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qemu-system');
    } catch {
      return false;
    }
  }).length;
}

// Ends every process that runs out of our folder, by PID.
async function endLeftovers(dir: string): Promise<void> {
  for (const pid of processesUsing(dir)) {
    const id = identifyPid(pid);
    if (id) await terminateProcess(id, 5_000);
  }
}

const rssMiB = (r: TimedRun): number => (r.peakRssKiB ?? Number.NaN) / 1024;

// Runs `reps` fresh start/stop rounds and one restoring start with n guests.
export async function benchQmpScale(n: number, reps: number, log: (msg: string) => void, traces: Record<string, [number, string][]>): Promise<QmpScaleResult> {
  const ours = await prepareOurs('rcl-bench-qmp-');
  const guestsDir = join(ours.dir, 'guests');
  const saveDir = join(ours.dir, 'save');
  const stateDir = ours.env.RC_LIBVIRT_STATE_DIR ?? join(ours.dir, 'state');
  const extraEnv = { QEMU_GUESTS_DIR: guestsDir, QEMU_SAVE_DIR: saveDir };
  const stop: TimedRun[] = [];
  const start: TimedRun[] = [];
  let restore: TimedRun | undefined;
  let restoreFailed = 0;
  try {
    await mkdir(guestsDir, { recursive: true });
    const argv = ['qemu-system-x86_64', '-machine', 'none', '-nodefaults', '-display', 'none', '-m', '16'];
    await Promise.all(Array.from({ length: n }, (_, i) =>
      writeFile(join(guestsDir, `scale-${String(i + 1).padStart(3, '0')}.json`), `${JSON.stringify({ argv, autostart: true })}\n`)));
    for (let rep = 1; rep <= reps; rep++) {
      // Nothing saved, no journal: every guest starts afresh.
      await rm(saveDir, { recursive: true, force: true });
      await rm(join(stateDir, 'journal.json'), { force: true });
      const up = await ours.run(['--driver', 'qmp', 'start'], { extraEnv, measureRss: true });
      const count = runningQemus(ours.dir);
      if (count !== n) throw new Error(`after rc.libvirt --driver qmp start: ${count} of ${n} guests run`);
      start.push(up);
      const down = await ours.run(['--driver', 'qmp', 'stop'], { extraEnv, measureRss: true });
      const left = runningQemus(ours.dir);
      if (left !== 0) throw new Error(`after rc.libvirt --driver qmp stop: ${left} of ${n} guests still run`);
      stop.push(down);
      traces[`qmp start N=${n}`] = trace(up);
      traces[`qmp stop N=${n}`] = trace(down);
      log(`qmp N=${n} round ${rep}: start ${ms(up.ms)} (${rssMiB(up).toFixed(0)} MiB), stop ${ms(down.ms)} (${rssMiB(down).toFixed(0)} MiB)`);
    }
    restore = await ours.run(['--driver', 'qmp', 'start'], { extraEnv, measureRss: true, allowFailure: true });
    restoreFailed = n - runningQemus(ours.dir);
    traces[`qmp start (restore) N=${n}`] = trace(restore);
    log(`qmp N=${n} restore: ${ms(restore.ms)}, ${restoreFailed} of ${n} failed to restore`);
    await ours.run(['--driver', 'qmp', 'stop'], { extraEnv, allowFailure: true });
  } finally {
    await endLeftovers(ours.dir);
    await ours.close();
  }
  return {
    n,
    freshStartMs: summarize(start.map((r) => r.ms)),
    restoreStartMs: Math.round(restore?.ms ?? Number.NaN),
    restoreFailed,
    stopMs: summarize(stop.map((r) => r.ms)),
    stopPeakRssMiB: summarize(stop.map(rssMiB)),
    startPeakRssMiB: summarize([...start, ...(restore ? [restore] : [])].map(rssMiB)),
  };
}
