// The benchmark report: a failed part in one line, and a run recorded before the newer fields existed.
import { describe, expect, it } from 'vitest';
import { errorSummary, renderReport } from '../../../bench/report.js';
import { emptyResults, type BenchResults } from '../../../bench/lib/results.js';
import { summarize } from '../../../bench/lib/stats.js';

describe('errorSummary', () => {
  it('keeps a plain failure as its first line', () => {
    expect(errorSummary('libvirt: no daemons\nat x')).toBe('libvirt: no daemons');
  });

  it('adds what the failed program said failed', () => {
    const e = 'scale N=8 (ours): rc.libvirt start: rc/rc.libvirt start exited 1; output:\n  a: restored (1.2 s)\n  b  start  failed  0.8  cannot look it up\n! error: guests failed: b\n! error: start: finished with failures';
    expect(errorSummary(e)).toBe('scale N=8 (ours): rc.libvirt start: rc/rc.libvirt start exited 1; output: `b  start  failed  0.8  cannot look it up`; `! error: guests failed: b`; `! error: start: finished with failures`');
  });
});

describe('renderReport', () => {
  // A run as recorded before spawn → first action and the scale part were measured.
  const s = (ms: number) => summarize([ms]);
  const old: BenchResults = {
    ...emptyResults(
      'full',
      { date: '2026-11-27T02:16:30.000Z', cores: 2, cpuModel: 'x', memoryMiB: 1, kernel: 'k', node: 'v20', qemu: 'q', libvirt: 'l', loadAtStart: 1, commit: 'abc' } as BenchResults['machine'],
      { guestCounts: [1], reps: 3, shutdownReps: 3, memMiB: 256, fill: 150, qmpCounts: [], qmpReps: 3, parallelSettings: [], helpSpawns: 20, notes: [] },
    ),
    stop: [{ n: 1, floorSaveMs: s(900), floorDaemonsMs: s(100), floorMs: s(1000), oursMs: s(1380), libvirtGuestsSuspendMs: s(1300), originalModelMs: s(7000) }],
    benchSeconds: 490,
  };

  it('renders it, saying what it did not record', () => {
    const md = renderReport(old, 'bench/results/old.json');
    expect(md).toContain('| `stop` ≤ 1.10× the floor at N=1 | N=1: 1.38× | **missed** |');
    expect(md).toMatch(/spawn → first guest action[^|]*\| not recorded in this run \| not measured \|/);
    expect(md).toMatch(/listing \(`plan --json`\) ≤ 0\.5 s with 64 guests \| not run \| not measured \|/);
    expect(md).not.toContain('## libvirt at scale');
  });

  it('shows the scale tables, virsh processes first, and judges the targets at 64', () => {
    const md = renderReport({
      ...old,
      libvirtScale: {
        memMiB: 32,
        listing: [{ n: 64, virshCalls: 258, virshByCommand: { dumpxml: 128, list: 1 }, ms: s(4420) }],
        compare: [{ n: 64, floorStopMs: s(9340), oursStopMs: s(9800), floorStartMs: s(8000), oursStartMs: s(9000), oursStopPeakRssMiB: s(76), oursStartPeakRssMiB: s(80) }],
      },
    }, 'bench/results/new.json');
    expect(md).toContain('| 64 | 258 | 128 | 1 | 4.42 | 69 |');
    expect(md).toMatch(/listing \(`plan --json`\) ≤ 0\.5 s with 64 guests \| N=64: 4\.42 s, 258 virsh processes \| \*\*missed\*\* \|/);
    expect(md).toMatch(/`stop` and `start` ≤ 1\.10× the floor with 64 guests \| N=64: stop 1\.05×, start 1\.13× \| \*\*missed\*\* \|/);
    expect(md).toMatch(/peak RSS < 100 MB with 64 guests \| N=64: 80\.0 MiB = 83\.9 MB \(max of stop and start\) \| \*\*met\*\* \|/);
  });
});
