// The floor: the same work as our commands, done the cheapest way from the
// bench itself, so ours can be compared with what the work costs in the same
// run. stop: every `virsh managedsave` at once, then SIGTERM to the three
// daemons at once until they are gone. start: the three daemons at once,
// `virsh version` until it answers, then every `virsh start` at once.
// guests_shutdown: every `virsh shutdown` at once until the last has stopped.
import { performance } from 'node:perf_hooks';
import { isSameProcessAlive, runCommand, sleep } from '../../test/helpers/process.js';
import { runVirsh } from '../../test/helpers/virsh.js';
import type { EventWitness } from './events.js';
import type { BenchGuest, DaemonId } from './libvirt-bed.js';

/** Times of a floor stop, ms. */
export interface FloorStop {
  saveMs: number;
  daemonsMs: number;
  totalMs: number;
}

/** Times of a floor start, ms from its beginning. */
export interface FloorStart {
  answerMs: number;
  allRunningMs: number;
}

// Runs virsh commands on every guest at once; throws naming the first failure.
async function allAtOnce<G extends { uuid: string }>(guests: readonly G[], args: (g: G) => string[]): Promise<void> {
  const results = await Promise.all(guests.map((g) => runVirsh(args(g), { timeoutMs: 600_000 })));
  const bad = results.find((r) => r.code !== 0);
  if (bad) throw new Error(`${bad.command} exited ${bad.code}: ${bad.stderr.trim()}`);
}

// SIGTERM to every daemon at once; resolves when all have exited (polled every 10 ms).
export async function terminateAll(daemons: readonly DaemonId[]): Promise<void> {
  for (const d of daemons) {
    try {
      process.kill(d.id.pid, 'SIGTERM');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  const t0 = performance.now();
  while (daemons.some((d) => isSameProcessAlive(d.id))) {
    if (performance.now() - t0 > 60_000) throw new Error(`daemons still run 60 s after SIGTERM: ${daemons.filter((d) => isSameProcessAlive(d.id)).map((d) => `${d.name} ${d.id.pid}`).join(', ')}`);
    await sleep(10);
  }
}

// The floor of stop: all managedsaves at once, then the daemons' SIGTERM.
export async function floorStop(guests: readonly { uuid: string }[], daemons: readonly DaemonId[]): Promise<FloorStop> {
  if (daemons.length !== 3) throw new Error(`floor stop: expected our three daemons, found ${daemons.map((d) => d.name).join(', ') || 'none'}`);
  const t0 = performance.now();
  await allAtOnce(guests, (g) => ['managedsave', `--domain=${g.uuid}`]);
  const t1 = performance.now();
  await terminateAll(daemons);
  const t2 = performance.now();
  return { saveMs: t1 - t0, daemonsMs: t2 - t1, totalMs: t2 - t0 };
}

// The daemon's arguments as rc.libvirt's defaults give them.
function daemonArgv(name: string): string[] {
  const args = ['-d'];
  if (name === 'libvirtd') args.push('-l');
  return [`/usr/sbin/${name}`, ...args, '-f', `/etc/libvirt/${name}.conf`, '-p', `/run/libvirt/${name}.pid`];
}

// Polls `virsh version` every `everyMs` until it answers; resolves with performance.now() of the answer.
export async function untilLibvirtdAnswers(everyMs: number, timeoutMs = 120_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const r = await runVirsh(['version'], { timeoutMs: 10_000 });
    if (r.code === 0) return performance.now();
    if (performance.now() - t0 > timeoutMs) throw new Error(`libvirtd did not answer within ${timeoutMs / 1000} s: ${r.stderr.trim()}`);
    await sleep(everyMs);
  }
}

// The floor of start: the three daemons at once, then every guest's `virsh start` (a restore) at once.
export async function floorStart(guests: readonly { uuid: string }[]): Promise<FloorStart> {
  const t0 = performance.now();
  const started = await Promise.all(['virtlockd', 'virtlogd', 'libvirtd'].map((n) => {
    const [file, ...args] = daemonArgv(n);
    return runCommand(file ?? n, args, { timeoutMs: 60_000 });
  }));
  const bad = started.find((r) => r.code !== 0);
  if (bad) throw new Error(`${bad.command} exited ${bad.code}: ${bad.stderr.trim()}`);
  const answered = await untilLibvirtdAnswers(20);
  await allAtOnce(guests, (g) => ['start', `--domain=${g.uuid}`]);
  const t2 = performance.now();
  return { answerMs: answered - t0, allRunningMs: t2 - t0 };
}

// The floor of guests_shutdown: every `virsh shutdown` at once; done when the witness has seen the last guest stop. Returns ms from the first request to the last Stopped event's timestamp.
export async function floorGuestsShutdown(guests: readonly BenchGuest[], witness: EventWitness): Promise<number> {
  const startedAt = Date.now();
  await allAtOnce(guests, (g) => ['shutdown', `--domain=${g.uuid}`]);
  let last = 0;
  for (const g of guests) {
    const e = await witness.waitFor((ev) => ev.name === g.name && ev.event === 'Stopped' && ev.time >= startedAt - 5, 300_000);
    last = Math.max(last, e.time);
  }
  return last - startedAt;
}
