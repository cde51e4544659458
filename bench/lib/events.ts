// An independent witness of libvirt's lifecycle events for the benchmarks:
// `virsh event --loop --event lifecycle --timestamp` run by the bench itself,
// each event with the wall-clock timestamp virsh printed.
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { LIBVIRT_URI } from '../../test/helpers/virsh.js';
import { sleep } from '../../test/helpers/process.js';

/** One lifecycle event. */
export interface SeenEvent {
  /** virsh's timestamp, ms since epoch. */
  time: number;
  name: string;
  event: string;
  detail: string;
}

// `2026-11-26 23:01:02.345+0000: event 'lifecycle' for domain 'NAME': Stopped Shutdown`; names are not escaped, so the name runs to the last `': `.
const LINE = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(\d\d): event 'lifecycle' for domain '(.*)': (\S+)(?: (.*))?$/;

// Parses one line of `virsh event --timestamp`, or undefined.
export function parseLifecycleLine(line: string): SeenEvent | undefined {
  const m = LINE.exec(line.trimEnd());
  if (!m) return undefined;
  const time = Date.parse(`${m[1]}T${m[2]}${m[3]}:${m[4]}`);
  if (!Number.isFinite(time)) return undefined;
  return { time, name: m[5] ?? '', event: m[6] ?? '', detail: m[7] ?? '' };
}

/** A running event witness. */
export interface EventWitness {
  readonly events: SeenEvent[];
  /** Waits until `pred` holds for some event seen so far or later; returns it. */
  waitFor(pred: (e: SeenEvent) => boolean, timeoutMs: number): Promise<SeenEvent>;
  close(): Promise<void>;
}

// Starts the witness (libvirtd must answer) and waits until virsh has registered for events.
export async function startEventWitness(): Promise<EventWitness> {
  const events: SeenEvent[] = [];
  const child: ChildProcess = spawn('virsh', ['-c', LIBVIRT_URI, 'event', '--loop', '--event', 'lifecycle', '--timestamp'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  let buf = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const e = parseLifecycleLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (e) events.push(e);
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  // virsh registers its callback right after connecting; give it a moment, and fail if it died.
  await sleep(300);
  if (child.exitCode !== null || child.signalCode !== null) {
    throw new Error(`virsh event ended at once: ${stderr.trim() || 'no message'}`);
  }
  return {
    events,
    async waitFor(pred, timeoutMs) {
      const t0 = performance.now();
      for (;;) {
        const hit = events.find(pred);
        if (hit) return hit;
        if (performance.now() - t0 > timeoutMs) throw new Error(`no such lifecycle event within ${timeoutMs / 1000} s (seen: ${events.length}; virsh stderr: ${stderr.trim() || 'none'})`);
        await sleep(10);
      }
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(kill);
    },
  };
}
