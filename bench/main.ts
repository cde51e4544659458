// The benchmark runner (npm run bench / npm run bench:quick): --help time,
// the qmp driver at scale, then everything on libvirt under the host-wide
// lock: stop/start, guests_shutdown, PARALLEL and reaction with N guests;
// then libvirt at scale (firmware guests, listing and stop/start; full runs
// and --only=scale).
// Writes bench/results/MODE-DATE.json and the Markdown report (full:
// docs/benchmarks.md; quick: bench/results/quick.md).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { repoRoot } from '../test/helpers/testbed.js';
import { benchConfig } from './config.js';
import { machineInfo } from './lib/machine.js';
import { emptyResults, type BenchResults } from './lib/results.js';
import { canMeasureRss } from './lib/timed.js';
import { renderReport } from './report.js';
import { benchHelp } from './scenarios/help.js';
import { benchLibvirt } from './scenarios/libvirt.js';
import { benchLibvirtScale } from './scenarios/libvirt-scale.js';
import { benchQmpScale } from './scenarios/qmp-scale.js';

const t0 = performance.now();
// Progress on stderr with the time since the start.
function log(msg: string): void {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
}

// Runs one part; a failure is recorded and the next part goes on.
async function part(results: BenchResults, what: string, fn: () => Promise<void>): Promise<void> {
  log(`-- ${what}`);
  try {
    await fn();
  } catch (err) {
    const msg = `${what}: ${(err as Error).message}`;
    results.errors.push(msg);
    log(`FAILED ${msg}`);
  }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => !['--quick', '--full'].includes(a) && !a.startsWith('--only=') && !a.startsWith('--render='));
  if (unknown.length > 0) {
    process.stderr.write(`usage: bench [--quick] [--only=help,qmp,libvirt,scale] | bench --render=bench/results/FILE.json\nunknown: ${unknown.join(' ')}\n`);
    return 2;
  }
  // Draw docs/benchmarks.md again from a recorded run (e.g. after editing bench/findings.md).
  const render = args.find((a) => a.startsWith('--render='))?.slice('--render='.length);
  if (render) {
    const recorded = JSON.parse(await readFile(render, 'utf8')) as BenchResults;
    const md = join(repoRoot, 'docs', 'benchmarks.md');
    await writeFile(md, renderReport(recorded, relative(repoRoot, resolve(render))));
    log(`wrote ${md} from ${render}`);
    return 0;
  }
  const mode = args.includes('--quick') ? 'quick' : 'full';
  const only = args.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
  const wants = (p: string): boolean => !only || only.includes(p);
  if (process.getuid?.() !== 0) throw new Error('the benchmarks run guests and libvirt daemons: run them as root on a machine set up by node testbed/setup.mjs');
  const config = benchConfig(mode);
  if (!canMeasureRss()) config.notes.push('/usr/bin/time is missing (package time): no peak RSS');
  if (process.env.RCL_BENCH_OURS_ARGS) config.notes.push(`our program ran with the extra options ${process.env.RCL_BENCH_OURS_ARGS} (RCL_BENCH_OURS_ARGS)`);
  const results = emptyResults(mode, await machineInfo(), config);
  log(`${mode} run on ${results.machine.cores} cores, ${results.machine.cpuModel}, load ${results.machine.loadAtStart}`);
  if (wants('help')) {
    await part(results, 'rc.libvirt --help', async () => {
      const h = await benchHelp(config.helpSpawns);
      results.helpMs = h.helpMs;
      results.nodeStartMs = h.nodeStartMs;
      log(`--help median ${h.helpMs.median} ms (node -e '' ${h.nodeStartMs.median} ms)`);
    });
  }
  if (wants('qmp')) {
    for (const n of config.qmpCounts) {
      await part(results, `qmp scale N=${n}`, async () => {
        results.qmpScale.push(await benchQmpScale(n, config.qmpReps, log, results.traces));
      });
    }
  }
  if (wants('libvirt')) await part(results, 'libvirt', () => benchLibvirt(results, config, log));
  // The scale part takes minutes: part of the full run; a quick run has it only when asked (--only=scale).
  if (mode === 'full' ? wants('scale') : only?.includes('scale')) await part(results, 'libvirt scale', () => benchLibvirtScale(results, config, log));
  results.benchSeconds = Math.round((performance.now() - t0) / 1000);

  const stamp = results.machine.date.replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z');
  const dir = join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const jsonPath = join(dir, `${mode}-${stamp}.json`);
  await writeFile(jsonPath, `${JSON.stringify(results, null, 2)}\n`);
  const mdPath = mode === 'full' && !only ? join(repoRoot, 'docs', 'benchmarks.md') : join(dir, `${mode}.md`);
  await writeFile(mdPath, renderReport(results, jsonPath.slice(repoRoot.length + 1)));
  log(`wrote ${jsonPath} and ${mdPath} in ${results.benchSeconds} s${results.errors.length ? `; ${results.errors.length} part(s) failed` : ''}`);
  return results.errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  },
);
