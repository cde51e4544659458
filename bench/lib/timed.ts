// Timed runs of programs for the benchmarks: wall time on the monotonic
// clock, every stdout/stderr line stamped with the wall clock when it
// arrived, and the peak RSS of the program through /usr/bin/time.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';

/** One line a program printed, with the wall-clock time (ms since epoch) it arrived. */
export interface StampedLine {
  at: number;
  stream: 'out' | 'err';
  text: string;
}

/** A finished timed run. */
export interface TimedRun {
  argv: string[];
  /** Wall time from spawn to exit, ms (monotonic clock). */
  ms: number;
  /** Wall-clock time of the spawn, ms since epoch. */
  startedAt: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: StampedLine[];
  /** Peak resident set size of the program, KiB (with measureRss). */
  peakRssKiB?: number;
  timedOut: boolean;
}

/** Options of timedRun. */
export interface TimedRunOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Measure the program's peak RSS with /usr/bin/time (GNU time, package `time`). */
  measureRss?: boolean;
}

const GNU_TIME = '/usr/bin/time';
let runs = 0;

// Tells whether GNU time is there to measure peak RSS.
export function canMeasureRss(): boolean {
  return existsSync(GNU_TIME);
}

// Runs argv (no shell), stamping its output lines; a non-zero exit is data. SIGKILL after the timeout.
export function timedRun(argv: readonly string[], opts: TimedRunOptions = {}): Promise<TimedRun> {
  const rssFile = opts.measureRss && canMeasureRss() ? join(tmpdir(), `rcl-bench-rss-${process.pid}-${++runs}`) : undefined;
  const full = rssFile ? [GNU_TIME, '-f', '%M', '-o', rssFile, ...argv] : [...argv];
  const [file, ...args] = full;
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    const t0 = performance.now();
    const child = spawn(file ?? '', args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const lines: StampedLine[] = [];
    const collect = (stream: 'out' | 'err'): ((d: string) => void) => {
      let buf = '';
      return (d: string) => {
        const at = Date.now();
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          lines.push({ at, stream, text: buf.slice(0, nl) });
          buf = buf.slice(nl + 1);
        }
      };
    };
    child.stdout.setEncoding('utf8').on('data', collect('out'));
    child.stderr.setEncoding('utf8').on('data', collect('err'));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 900_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${full.join(' ')}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      let peakRssKiB: number | undefined;
      if (rssFile) {
        try {
          const m = /(\d+)\s*$/.exec(readFileSync(rssFile, 'utf8'));
          if (m) peakRssKiB = Number(m[1]);
        } catch {
          // time wrote nothing: leave it undefined
        }
        rmSync(rssFile, { force: true });
      }
      // GNU time reports the program's own exit status as its own.
      const run: TimedRun = { argv: [...argv], ms, startedAt, code, signal, lines, timedOut };
      if (peakRssKiB !== undefined) run.peakRssKiB = peakRssKiB;
      resolve(run);
    });
  });
}

// The run's output as text (for error messages): the last `max` lines.
export function outputTail(run: TimedRun, max = 20): string {
  return run.lines.slice(-max).map((l) => `${l.stream === 'err' ? '! ' : '  '}${l.text}`).join('\n') || '(no output)';
}

// Throws unless the run exited 0, naming the command and its output.
export function checkRun(run: TimedRun, what: string): TimedRun {
  if (run.code !== 0) {
    const how = run.timedOut ? 'timed out' : run.signal ? `was killed by ${run.signal}` : `exited ${run.code}`;
    throw new Error(`${what}: ${run.argv.join(' ')} ${how}; output:\n${outputTail(run)}`);
  }
  return run;
}

// The run's output lines with ms since its start (for the JSON's traces).
export function trace(run: TimedRun): [number, string][] {
  return run.lines.map((l) => [l.at - run.startedAt, `${l.stream === 'err' ? '! ' : ''}${l.text}`]);
}
