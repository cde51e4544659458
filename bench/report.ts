// docs/benchmarks.md from a run's JSON: machine and versions, the targets
// and whether they are met, one table per scenario (medians, ratios), and
// how each number was measured.
import type { BenchResults, FirstActionResult, LibvirtScaleResult } from './lib/results.js';
import { ratio, type Summary } from './lib/stats.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../test/helpers/testbed.js';
import { METHOD } from './report-method.js';
import { renderPhases } from './report-phases.js';

const MB_IN_MIB = 1e6 / 1048576;

// Seconds with two decimals, or '–'.
const sec = (ms: number | undefined): string => (ms === undefined || !Number.isFinite(ms) ? '–' : (ms / 1000).toFixed(2));
// A median in seconds with its range when there are several samples.
const secS = (s: Summary | undefined): string => {
  if (!s || s.n === 0) return '–';
  return s.n > 1 ? `${sec(s.median)} (${sec(s.min)}–${sec(s.max)})` : sec(s.median);
};
const msS = (s: Summary | undefined): string => (!s || s.n === 0 ? '–' : `${s.median.toFixed(0)} ms (${s.min.toFixed(0)}–${s.max.toFixed(0)}, n=${s.n})`);
const x = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');
const yes = (ok: boolean | undefined): string => (ok === undefined ? 'not measured' : ok ? '**met**' : '**missed**');

// One Markdown table.
function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

// Each target of issue 15 (and those met before, which must stay met): what was measured and whether it is met.
function targets(r: BenchResults): string[][] {
  const rows: string[][] = [];
  const all = (xs: number[], ok: (v: number) => boolean): boolean | undefined => (xs.length === 0 || xs.some((v) => !Number.isFinite(v)) ? undefined : xs.every(ok));
  const ratioRow = (what: string, pairs: [string, number][], ok: (v: number) => boolean): void => {
    rows.push([what, pairs.map(([k, v]) => `${k}: ${x(v)}`).join(', ') || '–', yes(all(pairs.map(([, v]) => v), ok))]);
  };
  // Spawn → first action: stop and guests_shutdown; start apart (its first restore waits for the daemons it starts).
  for (const [what, scenarios] of [['`stop`, `guests_shutdown`', ['stop', 'guests_shutdown']], ['`start` (first restore; the daemons\' start included)', ['start']]] as const) {
    const first = (r.firstAction ?? []).filter((f) => (scenarios as readonly string[]).includes(f.scenario));
    rows.push([
      `spawn → first guest action ≤ 150 ms (median, N = 1..8): ${what}`,
      first.length > 0 ? first.map((f) => `${f.scenario} N=${f.n}: ${Number.isFinite(f.ms.median) ? `${f.ms.median.toFixed(0)} ms` : '–'}`).join(', ') : 'not recorded in this run',
      yes(first.length === 0 ? undefined : all(first.map((f) => f.ms.median), (v) => v <= 150)),
    ]);
  }
  const stopRatio = (s: BenchResults['stop'][number]): [string, number] => [`N=${s.n}`, ratio(s.oursMs.median, s.floorMs.median)];
  ratioRow('`stop` ≤ 1.10× the floor at N=1', r.stop.filter((s) => s.n === 1).map(stopRatio), (v) => v <= 1.1);
  ratioRow('`stop` ≤ 1.05× the floor at N ≥ 4', r.stop.filter((s) => s.n >= 4).map(stopRatio), (v) => v <= 1.05);
  ratioRow('`guests_shutdown` ≤ 1.10× the floor at every N', r.guestsShutdown.map((s) => [`N=${s.n}`, ratio(s.oursMs.median, s.floorMs.median)]), (v) => v <= 1.1);
  ratioRow('`start` (daemons + restores) ≤ 1.15× the floor at every N', r.start.map((s) => [`N=${s.n}`, ratio(s.oursAllRunningMs.median, s.floorAllRunningMs.median)]), (v) => v <= 1.15);
  const lgPairs: [string, number][] = [
    ...r.stop.map((s): [string, number] => [`stop N=${s.n}`, ratio(s.libvirtGuestsSuspendMs.median, s.oursMs.median)]),
    ...r.start.map((s): [string, number] => [`restore N=${s.n}`, ratio(s.libvirtGuestsStartMs.median, s.oursRestoreMs.median)]),
    ...r.guestsShutdown.map((s): [string, number] => [`guests_shutdown N=${s.n}`, ratio(s.libvirtGuestsShutdownMs.median, s.oursMs.median)]),
  ];
  ratioRow('faster than libvirt-guests.sh in every scenario at every N (its time / ours)', lgPairs, (v) => v > 1);
  const sc = r.libvirtScale;
  const big = sc ? [...sc.compare].sort((a, b) => b.n - a.n)[0] : undefined;
  const bigListing = sc ? [...sc.listing].sort((a, b) => b.n - a.n)[0] : undefined;
  const at64 = (n: number | undefined): string => (n === undefined ? '' : n === 64 ? '' : ` (largest N run: ${n}, target is for 64)`);
  rows.push([
    'libvirt at scale: listing (`plan --json`) ≤ 0.5 s with 64 guests',
    bigListing ? `N=${bigListing.n}: ${sec(bigListing.ms.median)} s, ${bigListing.virshCalls} virsh processes${at64(bigListing.n)}` : 'not run',
    yes(bigListing && bigListing.n >= 64 ? bigListing.ms.median <= 500 : undefined),
  ]);
  const scaleRatio = big ? [['stop', ratio(big.oursStopMs.median, big.floorStopMs.median)], ['start', ratio(big.oursStartMs.median, big.floorStartMs.median)]] as [string, number][] : [];
  rows.push([
    'libvirt at scale: `stop` and `start` ≤ 1.10× the floor with 64 guests',
    big ? `N=${big.n}: ${scaleRatio.map(([k, v]) => `${k} ${x(v)}`).join(', ')}${at64(big.n)}` : 'not run',
    yes(big && big.n >= 64 ? all(scaleRatio.map(([, v]) => v), (v) => v <= 1.1) : undefined),
  ]);
  const scaleRss = big ? Math.max(big.oursStopPeakRssMiB.max, big.oursStartPeakRssMiB.max) : undefined;
  rows.push([
    'libvirt at scale: peak RSS < 100 MB with 64 guests',
    big && scaleRss !== undefined && Number.isFinite(scaleRss) ? `N=${big.n}: ${scaleRss.toFixed(1)} MiB = ${(scaleRss / MB_IN_MIB).toFixed(1)} MB (max of stop and start)${at64(big.n)}` : big ? 'not measured (no /usr/bin/time)' : 'not run',
    yes(big && big.n >= 64 && scaleRss !== undefined && Number.isFinite(scaleRss) ? scaleRss / MB_IN_MIB < 100 : undefined),
  ]);
  const reactions = [r.reaction.driverStopMs?.median, r.reaction.driverPauseResumeMs?.median, r.reaction.cliMs?.median].filter((v): v is number => v !== undefined);
  rows.push(['reaction under 100 ms', `driver: stop ${msS(r.reaction.driverStopMs)}, pause/resume ${msS(r.reaction.driverPauseResumeMs)}; command line: ${msS(r.reaction.cliMs)}`, yes(all(reactions, (v) => v < 100))]);
  const q100 = r.qmpScale.find((q) => q.n === 100) ?? r.qmpScale[r.qmpScale.length - 1];
  const rss = q100 ? Math.max(q100.stopPeakRssMiB.max, q100.startPeakRssMiB.max) : undefined;
  rows.push([`peak RSS under 100 MB with 100 qmp guests`, q100 && rss !== undefined ? `${q100.n} guests: ${rss.toFixed(1)} MiB = ${(rss / MB_IN_MIB).toFixed(1)} MB (max of start and stop)` : '–', yes(q100 && q100.n === 100 && rss !== undefined && Number.isFinite(rss) ? rss / MB_IN_MIB < 100 : undefined)]);
  const help = r.helpMs ? `${r.helpMs.median.toFixed(0)} ms${r.nodeStartMs ? ` (\`node -e ''\` alone: ${r.nodeStartMs.median.toFixed(0)} ms)` : ''}` : '–';
  rows.push(['`rc.libvirt --help` under 150 ms', help, yes(r.helpMs ? r.helpMs.median < 150 : undefined)]);
  return rows;
}

// Spawn → first guest action: one row per scenario, one column per N.
function firstActionTable(r: BenchResults): string | undefined {
  const first = r.firstAction ?? [];
  if (first.length === 0) return undefined;
  const ns = [...new Set(first.map((f) => f.n))].sort((a, b) => a - b);
  const cell = (s: Summary | undefined): string => (!s || s.n === 0 ? '–' : s.n > 1 ? `${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)})` : s.median.toFixed(0));
  const rows: string[][] = [];
  for (const scenario of ['stop', 'guests_shutdown', 'start'] as const) {
    const of = (n: number): FirstActionResult | undefined => first.find((f) => f.scenario === scenario && f.n === n);
    if (!ns.some((n) => of(n))) continue;
    rows.push([`\`${scenario}\``, ...ns.map((n) => cell(of(n)?.ms))]);
    if (scenario === 'start') rows.push(['`start`, from libvirtd answering', ...ns.map((n) => cell(of(n)?.afterAnswerMs))]);
  }
  return table(['ms (median, range)', ...ns.map((n) => `N=${n}`)], rows);
}

// libvirt at scale: the listing (virsh processes first: they do not depend on the noise), then stop/start against the floor.
function scaleSection(sc: LibvirtScaleResult): string[] {
  const out: string[] = [];
  out.push(`${sc.memMiB} MiB guests that sit in their firmware (no disk, kernel or network; TCG), on the bench's own libvirtd. The virsh processes are counted through a \`VIRSH\` wrapper that logs each call (one run per N); the times are of runs without it.`, '');
  const cmds = [...new Set(sc.listing.flatMap((l) => Object.keys(l.virshByCommand)))].sort();
  out.push(table(['guests', 'virsh processes per listing', ...cmds.map((c) => `\`${c}\``), 'listing (`plan --json`)', 'ms per guest'], sc.listing.map((l) => [
    String(l.n), String(l.virshCalls), ...cmds.map((c) => String(l.virshByCommand[c] ?? 0)), secS(l.ms), l.n > 0 && Number.isFinite(l.ms.median) ? (l.ms.median / l.n).toFixed(0) : '–',
  ])), '');
  for (const l of sc.listing) if (l.failures?.length) out.push(`**N=${l.n}: \`plan --json\` exited non-zero in ${l.failures.length} run(s)** (they are timed and counted all the same): ${l.failures.join('; ')}.`, '');
  if (sc.compare.length > 0) {
    out.push(table(['guests', 'stop: ours', 'floor', 'ours/floor', 'start: ours', 'floor', 'ours/floor', 'peak RSS stop', 'peak RSS start'], sc.compare.map((c) => [
      String(c.n), secS(c.oursStopMs), secS(c.floorStopMs), x(ratio(c.oursStopMs.median, c.floorStopMs.median)),
      secS(c.oursStartMs), secS(c.floorStartMs), x(ratio(c.oursStartMs.median, c.floorStartMs.median)),
      c.oursStopPeakRssMiB.n > 0 ? `${c.oursStopPeakRssMiB.max.toFixed(1)} MiB` : '–', c.oursStartPeakRssMiB.n > 0 ? `${c.oursStartPeakRssMiB.max.toFixed(1)} MiB` : '–',
    ])), '');
  }
  return out;
}

// A failure in one line: its first line and, for a program that failed, the lines of its output that say what failed.
export function errorSummary(e: string): string {
  const [head = '', ...rest] = e.split('\n');
  if (!head.endsWith('output:')) return head;
  const why = rest.map((l) => l.trim()).filter((l) => /\bfailed\b|^! error/.test(l)).slice(0, 3);
  return why.length > 0 ? `${head} ${why.map((l) => `\`${l.replace(/`/g, "'")}\``).join('; ')}` : head;
}

// The report as Markdown.
export function renderReport(r: BenchResults, jsonPath: string): string {
  const m = r.machine;
  const out: string[] = [];
  out.push('# Benchmarks', '');
  out.push(`Generated by \`npm run bench${r.mode === 'quick' ? ':quick' : ''}\` (${r.mode} mode) from \`${jsonPath}\`. Times are medians of the runs, in seconds unless marked; ranges (min–max) in parentheses. Ratios compare medians: *ours/floor* above 1 means ours took longer than the floor; *it/ours* is the column to its left divided by ours, so above 1 means ours was faster.`, '');
  if (r.mode === 'quick') out.push('**Quick mode: one run, few guests — a smoke test of the bench, not a result.**', '');
  out.push('## Machine', '');
  out.push(table(['', ''], [
    ['date', m.date],
    ['commit measured', m.commit ?? 'not recorded'],
    ['CPU', `${m.cpuModel}, ${m.cores} cores`],
    ['memory', `${m.memoryMiB} MiB`],
    ['kernel', m.kernel],
    ['node', m.node],
    ['QEMU', m.qemu],
    ['libvirt', m.libvirt],
    ['load average at start (shared machine)', String(m.loadAtStart)],
    ['guests', `${r.config.memMiB} MiB, ${r.config.fill} MiB filled, TCG; N = ${r.config.guestCounts.join(', ')}; ${r.config.reps} stop/start rounds, ${r.config.shutdownReps} guests_shutdown rounds`],
    ...(r.libvirtScale ? [['libvirt at scale', `${r.libvirtScale.memMiB} MiB firmware guests; listing at N = ${r.libvirtScale.listing.map((l) => l.n).join(', ') || '–'}; stop/start at N = ${r.libvirtScale.compare.map((c) => c.n).join(', ') || '–'}, ${r.config.scaleReps ?? '?'} rounds`]] : []),
    ['whole bench', `${r.benchSeconds} s`],
  ]), '');
  for (const n of r.config.notes) out.push(`Note: ${n}`, '');
  out.push('## Targets', '');
  out.push(table(['target', 'measured', ''], targets(r)), '');
  const firstTable = firstActionTable(r);
  if (firstTable) {
    out.push('## Spawn → first guest action', '');
    out.push('From the stamped `-v` output of every round of ours: ms from spawning `rc.libvirt` to the line of its first `virsh managedsave`, `shutdown` or `start` (a restore), printed just before that call. For `start` this includes starting the daemons; the second `start` row counts from its `libvirtd answers` line.', '');
    out.push(firstTable, '');
  }
  if (r.libvirtScale) {
    out.push('## libvirt at scale', '');
    out.push(...scaleSection(r.libvirtScale));
  }
  out.push('## stop', '');
  out.push('`rc.libvirt stop` (save every guest, then stop the daemons) against the floor (the same work, cheapest), libvirt-guests.sh `ON_SHUTDOWN=suspend` (guests only, daemons stay up) and the original script\'s waiting (model, see Method).', '');
  out.push(table(['N', 'floor: saves', 'floor: daemons', 'floor', 'ours', 'ours/floor', 'libvirt-guests.sh', 'it/ours', 'original (model)', 'it/ours'], r.stop.map((s) => [
    String(s.n), secS(s.floorSaveMs), secS(s.floorDaemonsMs), secS(s.floorMs), secS(s.oursMs), x(ratio(s.oursMs.median, s.floorMs.median)),
    secS(s.libvirtGuestsSuspendMs), x(ratio(s.libvirtGuestsSuspendMs.median, s.oursMs.median)), secS(s.originalModelMs), x(ratio(s.originalModelMs.median, s.oursMs.median)),
  ])), '');
  out.push('## start (restore)', '');
  out.push('After a stop that saved the guests: time until libvirtd answers and until every guest runs again, from the command\'s start. "Restore only" counts from libvirtd answering; libvirt-guests.sh `start` (ON_BOOT=start) does only that part (libvirtd already up).', '');
  out.push(table(['N', 'floor: libvirtd answers', 'floor: all running', 'ours: libvirtd answers', 'ours: all running', 'ours/floor', 'restore only: floor', 'ours', 'libvirt-guests.sh', 'it/ours'], r.start.map((s) => [
    String(s.n), secS(s.floorAnswerMs), secS(s.floorAllRunningMs), secS(s.oursAnswerMs), secS(s.oursAllRunningMs), x(ratio(s.oursAllRunningMs.median, s.floorAllRunningMs.median)),
    secS(s.floorRestoreMs), secS(s.oursRestoreMs), secS(s.libvirtGuestsStartMs), x(ratio(s.libvirtGuestsStartMs.median, s.oursRestoreMs.median)),
  ])), '');
  out.push('## guests_shutdown', '');
  out.push(table(['N', 'floor', 'ours', 'ours/floor', `libvirt-guests.sh (PARALLEL_SHUTDOWN=N)`, 'it/ours', 'original (model)', 'it/ours'], r.guestsShutdown.map((s) => [
    String(s.n), secS(s.floorMs), secS(s.oursMs), x(ratio(s.oursMs.median, s.floorMs.median)),
    secS(s.libvirtGuestsShutdownMs), x(ratio(s.libvirtGuestsShutdownMs.median, s.oursMs.median)), secS(s.originalModelMs), x(ratio(s.originalModelMs.median, s.oursMs.median)),
  ])), '');
  out.push('## Reaction time', '');
  const w = r.reaction.driverWaits;
  out.push(table(['from the event\'s timestamp to', 'median (range, samples)'], [
    ['the libvirt driver\'s waitForState(shutoff) resolving (Stopped)', msS(r.reaction.driverStopMs)],
    ['the libvirt driver\'s waitForState(paused / running) resolving (Suspended, Resumed)', msS(r.reaction.driverPauseResumeMs)],
    ['`rc.libvirt guests_shutdown` printing the guest\'s result', msS(r.reaction.cliMs)],
  ]), '');
  if (w) out.push(`The driver's measured waits ended ${w.byEvent} times by an event, ${w.byPoll} times by a poll, ${w.immediate} times at once. The original polled once a second (0.5 s late on average, up to 1 s).`, '');
  out.push('## qmp driver at scale', '');
  out.push('`qemu-system-x86_64 -machine none -m 16` guests; `rc.libvirt --driver qmp start` / `stop`; peak RSS of our process (GNU time\'s maximum resident set size).', '');
  out.push(table(['N', 'start (fresh)', 'stop (save)', 'start (restore, once)', 'failed restores', 'peak RSS start', 'peak RSS stop'], r.qmpScale.map((q) => [
    String(q.n), secS(q.freshStartMs), secS(q.stopMs), sec(q.restoreStartMs), String(q.restoreFailed), `${q.startPeakRssMiB.max.toFixed(1)} MiB`, `${q.stopPeakRssMiB.max.toFixed(1)} MiB`,
  ])), '');
  const failedRestores = r.qmpScale.filter((q) => q.restoreFailed > 0);
  if (failedRestores.length > 0) out.push(`**Restores failed**: ${failedRestores.map((q) => `${q.restoreFailed} of ${q.n}`).join(', ')} guests were not restored by \`--driver qmp start\` (its output: the trace \`qmp start (restore) N=…\` in the JSON).`, '');
  out.push('## PARALLEL', '');
  const all = r.parallel.find((p) => p.parallel === 0);
  out.push(table(['PARALLEL', 'guests', 'ours: stop', 'vs PARALLEL=0'], r.parallel.map((p) => [
    p.parallel === 0 ? '0 (all)' : String(p.parallel), String(p.n), secS(p.oursMs), x(ratio(p.oursMs.median, all?.oursMs.median)),
  ])), '');
  const best = [...r.parallel].sort((a, b) => a.oursMs.median - b.oursMs.median)[0];
  if (best) out.push(`Fastest here: PARALLEL=${best.parallel === 0 ? '0 (all at once)' : best.parallel}. The default is 0 (all at once).`, '');
  out.push('## rc.libvirt --help', '');
  out.push(`${r.helpMs ? `${r.helpMs.median.toFixed(0)} ms` : '–'} median over ${r.config.helpSpawns} spawns (range ${r.helpMs ? `${r.helpMs.min.toFixed(0)}–${r.helpMs.max.toFixed(0)}` : '–'} ms); \`node -e ''\` alone: ${r.nodeStartMs ? `${r.nodeStartMs.median.toFixed(0)} ms` : '–'}.`, '');
  const phases = renderPhases(r);
  if (phases) {
    out.push('## Where our time goes', '');
    out.push('From the stamped output of our last run in each scenario (ms since the program was spawned; the lines it prints with `-v`).', '');
    out.push(phases, '');
  }
  // Hand-written analysis of this run (what makes ours slower than the floor, and what would close it).
  const findings = join(repoRoot, 'bench', 'findings.md');
  if (existsSync(findings)) out.push(readFileSync(findings, 'utf8').trim(), '');
  if (r.errors.length > 0) {
    out.push('## Parts that failed in this run', '');
    for (const e of r.errors) out.push(`- ${errorSummary(e)}`);
    out.push('');
  }
  out.push(METHOD);
  return `${out.join('\n')}\n`;
}
