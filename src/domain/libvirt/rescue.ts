// The rescue path: libvirtd does not answer, so the running guests are found
// in libvirt's status files and brought down through their own QMP monitors:
// `system_powerdown` first (QEMU runs with -no-shutdown under libvirt, so a
// powered-off guest stays in QEMU's `shutdown` state and libvirt later records
// "shut off", not "crashed"); at the deadline `quit`, then SIGKILL of the
// recorded pid once it is checked to be that guest's QEMU. While libvirtd holds
// a monitor no second client gets a greeting, so the caller first releases the
// monitors (`releaseMonitors`: end the hung libvirtd by its checked pid).
import { readFileSync, readlinkSync } from 'node:fs';
import { deadline, now, sleep } from '../../util/deadline.js';
import { errorMessage } from '../../util/error-message.js';
import type { Log } from '../../util/log.js';
import { connectQmp, type QmpClient } from '../../qmp/qmp-client.js';
import { DEFAULT_STATUS_DIR, readStatusFiles, type StatusGuest } from './status-files.js';

/** What happened to one guest. */
export type RescueOutcome = 'powered-off' | 'quit' | 'killed' | 'gone' | 'failed';

/** One guest's result: data, so one failure never stops the others. */
export interface RescueResult {
  id: string;
  name: string;
  result: RescueOutcome;
  reason: string;
  ms: number;
}

/** Options of rescueGuests. */
export interface RescueOptions {
  /** libvirt's status files (default /run/libvirt/qemu). */
  statusDir?: string;
  /** How long a guest may take to power off after the power button (ms). */
  graceMs: number;
  /** The caller's bound: when it aborts, guests still up are forced down at once. */
  signal: AbortSignal;
  log: Log;
  /** Ends whatever holds the monitors (the hung libvirtd), before we connect. */
  releaseMonitors?: (signal: AbortSignal) => Promise<void>;
  /** Only these guests (UUIDs or names); default every running or paused one. */
  only?: readonly string[];
  /** Deadline of connecting to one monitor and getting its greeting (ms, default 3000). */
  connectTimeoutMs?: number;
  /** After `quit`, how long to wait for the QEMU to exit before SIGKILL (ms, default 3000). */
  quitWaitMs?: number;
}

/** Bring down every running guest of the status files through QMP; resolves with one result per guest. */
export async function rescueGuests(opts: RescueOptions): Promise<RescueResult[]> {
  const dir = opts.statusDir ?? DEFAULT_STATUS_DIR;
  const { guests, problems } = await readStatusFiles(dir);
  for (const p of problems) opts.log.warn(`rescue: ${p}`);
  const chosen = guests.filter(
    (g) => (opts.only ? opts.only.includes(g.uuid) || opts.only.includes(g.name) : g.state !== 'shutoff') && isGuestQemu(g),
  );
  if (chosen.length === 0) return [];
  if (opts.releaseMonitors) {
    const d = deadline(30_000, opts.signal);
    try {
      await opts.releaseMonitors(d.signal);
    } finally {
      d.clear();
    }
  }
  return Promise.all(chosen.map((g) => rescueGuest(g, opts)));
}

/** Power one guest off through its monitor; at the deadline quit it, then kill its checked pid. */
export async function rescueGuest(g: StatusGuest, opts: RescueOptions): Promise<RescueResult> {
  const started = now();
  const done = (result: RescueOutcome, reason: string): RescueResult => {
    const r = { id: g.uuid, name: g.name, result, reason, ms: now() - started };
    opts.log[result === 'powered-off' || result === 'gone' ? 'info' : 'warn'](`rescue: ${g.name}: ${result}: ${reason}`);
    return r;
  };
  if (!isGuestQemu(g)) return done('gone', `QEMU pid ${g.pid} no longer runs`);
  const grace = deadline(opts.graceMs, opts.signal);
  let client: QmpClient | undefined;
  try {
    const conn = deadline(opts.connectTimeoutMs ?? 3000, grace.signal);
    try {
      client = await connectQmp(g.monitorPath, { signal: conn.signal, guest: g.name });
    } catch (err) {
      return done('failed', `monitor ${g.monitorPath} not reachable: ${errorMessage(err)}`);
    } finally {
      conn.clear();
    }
    try {
      if ((await queryStatus(client, grace.signal)) === 'shutdown') return done('powered-off', 'was powered off already');
      const shutdown = client.listen('SHUTDOWN');
      try {
        if ((await queryStatus(client, grace.signal)) === 'paused') {
          // A paused guest cannot see the power button; never leave it paused.
          opts.log.warn(`rescue: ${g.name} is paused: resuming it to power it off`);
          await client.execute('cont', undefined, { signal: grace.signal });
        }
        await client.execute('system_powerdown', undefined, { signal: grace.signal });
        await shutdown.next({ signal: grace.signal });
      } finally {
        shutdown.unsubscribe();
      }
      return done('powered-off', 'system_powerdown: the guest powered off');
    } catch (err) {
      if (!isGuestQemu(g)) return done('powered-off', 'the guest powered off and its QEMU exited');
      return await forceDown(g, client, `${grace.signal.aborted ? 'not off by the deadline' : errorMessage(err)}`, done, opts);
    }
  } finally {
    grace.clear();
    await client?.close().catch(() => undefined);
  }
}

async function forceDown(
  g: StatusGuest,
  client: QmpClient,
  why: string,
  done: (r: RescueOutcome, reason: string) => RescueResult,
  opts: RescueOptions,
): Promise<RescueResult> {
  const r = await quitOrKill(g, client, opts.quitWaitMs ?? 3000);
  return done(r.result, `${why}: ${r.reason}`);
}

/** `quit` the guest's QEMU; if it still runs after `quitWaitMs`, SIGKILL its pid (checked to be that QEMU). */
export async function quitOrKill(
  g: Pick<StatusGuest, 'pid' | 'uuid'>,
  client: QmpClient | undefined,
  quitWaitMs: number,
): Promise<{ result: 'quit' | 'killed' | 'failed'; reason: string }> {
  const d = deadline(quitWaitMs);
  try {
    if (client) await client.execute('quit', undefined, { signal: d.signal }).catch(() => undefined);
    while (client && !d.signal.aborted && isGuestQemu(g)) await sleep(50, d.signal).catch(() => undefined);
  } finally {
    d.clear();
  }
  if (!isGuestQemu(g)) return { result: 'quit', reason: 'QMP quit' };
  try {
    process.kill(g.pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') return { result: 'failed', reason: `quit ignored, SIGKILL of ${g.pid} failed: ${errorMessage(err)}` };
  }
  return { result: 'killed', reason: `${client ? 'quit ignored, ' : ''}SIGKILL of pid ${g.pid}` };
}

/** QEMU's run state (`running`, `paused`, `shutdown`...) from `query-status`. */
export async function queryStatus(client: QmpClient, signal: AbortSignal): Promise<string> {
  const r = await client.execute<{ status?: string }>('query-status', undefined, { signal });
  return String(r?.status ?? '');
}

/** True when the recorded pid is still this guest's QEMU (exe is qemu-system-*, cmdline names its UUID). */
export function isGuestQemu(g: Pick<StatusGuest, 'pid' | 'uuid'>): boolean {
  try {
    const stat = readFileSync(`/proc/${g.pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const args = readFileSync(`/proc/${g.pid}/cmdline`, 'latin1').split('\0');
    const exe = safeReadlink(`/proc/${g.pid}/exe`) ?? args[0] ?? '';
    if (!/qemu/.test(exe.split('/').pop() ?? '')) return false;
    const i = args.indexOf('-uuid');
    return i >= 0 && args[i + 1]?.toLowerCase() === g.uuid.toLowerCase();
  } catch {
    return false;
  }
}

function safeReadlink(p: string): string | undefined {
  try {
    return readlinkSync(p).replace(/ \(deleted\)$/, '');
  } catch {
    return undefined;
  }
}
