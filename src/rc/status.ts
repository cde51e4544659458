// `status`: the daemons (pid, up/down, pidfile problems), whether libvirtd
// answers, its guests (state, saved image) and the guests waiting to be
// restored; with DRIVER=qmp the qmp guests instead of the daemons and
// libvirt's guests. The JSON form is documented in docs/daemons.md and stays stable.
import { stat } from 'node:fs/promises';
import type { Settings } from '../config/settings.js';
import { describeDaemons } from '../daemons/daemon-spec.js';
import { describePidfileProblem, describeStrays, findStrayProcesses, inspectPidfile } from '../daemons/pidfile.js';
import { askLibvirtd } from '../daemons/readiness.js';
import { errorMessage } from '../util/error-message.js';
import { createLibvirtDriver } from '../domain/libvirt/driver.js';
import { hintDirsFor } from '../domain/libvirt/guest-hints.js';
import { createQmpDriver } from '../domain/qmp/qmp-driver.js';
import type { GuestState } from '../domain/types.js';
import { qmpRunDir } from '../guests/open-drivers.js';
import type { Log } from '../util/log.js';
import { deadline } from '../util/deadline.js';
import { pendingGuests, type PendingGuest } from './guest-steps.js';
import { isRoot, type RunContext, type RunOutcome } from './run-context.js';

/** One daemon in the status. */
export interface DaemonStatus {
  name: string;
  running: boolean;
  pid: number | null;
  pidfile: string;
  /** A stale, foreign or invalid pidfile, or processes of the daemon the pidfile does not name, in words; null when fine. */
  problem: string | null;
  /** Live processes of the daemon's program that the pidfile does not name. */
  otherPids: number[];
}

/** One guest in the status. */
export interface GuestStatus {
  uri: string;
  /** The libvirt UUID. */
  id: string;
  name: string;
  state: GuestState;
  /** libvirt's own words for the state and its reason, e.g. `paused (user)`. */
  stateDetail: string;
  /** A managed save image waits for the guest's next start. */
  savedImage: boolean;
  /** qmp: the saved image is older than the running guest (never restored; set aside when the guest is saved, shut down or destroyed). */
  staleImage?: string;
}

/** The whole status (`status --json` prints it). */
export interface Status {
  /** Bumped only when a field changes meaning or goes away. */
  version: 1;
  /** The driver the guests were read through (DRIVER); with `qmp` the libvirt daemons are not used: `daemons` is empty, `libvirtd` null. */
  driver: 'libvirt' | 'qmp';
  /** qmp: the guest definitions' directory (QEMU_GUESTS_DIR) and whether it exists. */
  qmp?: { guestsDir: string; exists: boolean };
  daemons: DaemonStatus[];
  libvirtd: {
    running: boolean;
    /** null when it does not run, or when this user may not ask it (not root). */
    answering: boolean | null;
    error: string | null;
  } | null;
  guests: GuestStatus[];
  /** Why the guests could not be listed (per URI), if so. */
  guestErrors: string[];
  pending: PendingGuest[];
}

const CALL_MS = 10_000;

/** Gather the status; never changes anything. */
export async function collectStatus(settings: Settings, signal: AbortSignal, isRoot: boolean): Promise<Status> {
  if (settings.driver === 'qmp') return collectQmpStatus(settings, signal);
  const daemons: DaemonStatus[] = [];
  for (const spec of describeDaemons(settings)) {
    const st = await inspectPidfile(spec);
    const pid = st.state === 'running' ? st.pid : null;
    const otherPids = await findStrayProcesses(spec, pid ?? undefined);
    const problems = [describePidfileProblem(spec, st), otherPids.length > 0 ? describeStrays(spec, otherPids) : undefined].filter(Boolean);
    daemons.push({
      name: spec.name,
      running: pid !== null,
      pid,
      pidfile: spec.pidfile,
      problem: problems.length > 0 ? problems.join('; ') : null,
      otherPids,
    });
  }
  const running = daemons.find((d) => d.name === 'libvirtd')?.running ?? false;
  const libvirtd: NonNullable<Status['libvirtd']> = { running, answering: null, error: null };
  const status: Status = { version: 1, driver: 'libvirt', daemons, libvirtd, guests: [], guestErrors: [], pending: [] };
  if (running) {
    const err = await askLibvirtd(settings, signal);
    if (err === undefined) libvirtd.answering = true;
    else if (!isRoot && /permission|denied|authentication/i.test(err)) libvirtd.error = `cannot ask libvirtd as this user: ${err}`;
    else {
      libvirtd.answering = false;
      libvirtd.error = err;
    }
  }
  if (libvirtd.answering) {
    for (const uri of settings.uris) {
      try {
        status.guests.push(...(await listGuestsForStatus(settings, uri, signal)));
      } catch (err) {
        status.guestErrors.push(`${uri}: ${(err as Error).message}`);
      }
    }
  }
  await addPending(status, settings);
  return status;
}

// The journal's guests waiting to be restored, or why they cannot be read.
async function addPending(status: Status, settings: Settings): Promise<void> {
  try {
    status.pending = await pendingGuests(settings);
  } catch (err) {
    status.guestErrors.push(`guests waiting to be restored: ${(err as Error).message}`);
  }
}

// DRIVER=qmp: the guests of QEMU_GUESTS_DIR through the qmp driver (a definition it
// cannot read is a guest error); the libvirt daemons are not asked.
async function collectQmpStatus(settings: Settings, signal: AbortSignal): Promise<Status> {
  const exists = await stat(settings.guestsDir).then((st) => st.isDirectory(), () => false);
  const status: Status = { version: 1, driver: 'qmp', qmp: { guestsDir: settings.guestsDir, exists }, daemons: [], libvirtd: null, guests: [], guestErrors: [], pending: [] };
  const collect = (msg: string): void => void status.guestErrors.push(msg);
  const log: Log = { debug: () => undefined, info: () => undefined, notice: () => undefined, warn: collect, error: collect, flush: async () => undefined };
  // No definitions directory, no guests: the driver (which makes its runtime and save directories) is not opened.
  if (exists) {
    const driver = createQmpDriver({ guestsDir: settings.guestsDir, runDir: qmpRunDir(settings), saveDir: settings.qemuSaveDir, log });
    const d = deadline(CALL_MS * 3, signal);
    try {
      const guests = await driver.listGuests({ signal: d.signal });
      status.guests = guests.map((g) => ({ uri: g.uri, id: g.id, name: g.name, state: g.state, stateDetail: g.stateDetail, savedImage: g.hasSavedImage, ...(g.staleImage ? { staleImage: g.staleImage } : {}) }));
    } catch (err) {
      status.guestErrors.push(`${driver.uri}: ${errorMessage(err)}`);
    } finally {
      d.clear();
      await driver.close().catch(() => undefined);
    }
  }
  await addPending(status, settings);
  return status;
}

// Every guest of one URI through the libvirt driver (each virsh call with a deadline).
async function listGuestsForStatus(settings: Settings, uri: string, signal: AbortSignal): Promise<GuestStatus[]> {
  const driver = createLibvirtDriver({ uri, virsh: settings.virsh, callTimeoutMs: CALL_MS, hintDirs: hintDirsFor(uri) });
  try {
    const guests = await driver.listGuests({ signal });
    return guests.map((g) => ({ uri, id: g.id, name: g.name, state: g.state, stateDetail: g.stateDetail, savedImage: g.hasSavedImage }));
  } finally {
    await driver.close();
  }
}

/**
 * The outcome of `status`. libvirt: `ok` libvirtd runs (and answers, where we may ask), `failed` it runs but does not
 * answer, `not-running` it does not run. qmp (no daemon: the guests are the service): `ok` a guest runs (or is paused),
 * `failed` the guests could not be listed, `not-running` no guest runs.
 */
export function statusOutcome(s: Status): RunOutcome {
  if (s.libvirtd === null) {
    if (s.guests.some((g) => g.state === 'running' || g.state === 'paused' || g.state === 'suspended')) return 'ok';
    return s.guestErrors.some((e) => !e.startsWith('guests waiting to be restored:')) ? 'failed' : 'not-running';
  }
  if (!s.libvirtd.running) return 'not-running';
  return s.libvirtd.answering === false ? 'failed' : 'ok';
}

/** The body of `status`: needs no root and takes no lock (it only reads, and must answer while a stop runs); as another user libvirtd may refuse to answer it. */
export async function statusCommand(run: RunContext): Promise<RunOutcome> {
  const status = await collectStatus(run.settings, run.signal, isRoot());
  run.stdout.write(run.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
  return statusOutcome(status);
}

/** The status as lines for a person. */
export function formatStatus(s: Status): string {
  const out: string[] = [];
  if (s.libvirtd === null) out.push(`driver qmp: guests run under QEMU directly${s.qmp ? `, defined in ${s.qmp.guestsDir}` : ''}; the libvirt daemons are not used`);
  for (const d of s.daemons) {
    out.push(`${d.name.padEnd(10)} ${d.running ? `running (pid ${d.pid})` : 'stopped'}${d.problem ? `  [${d.problem}]` : ''}`);
  }
  const lv = s.libvirtd;
  if (lv?.running) {
    out.push(`libvirtd ${lv.answering === true ? 'answers' : lv.answering === false ? `does not answer: ${lv.error}` : `not asked: ${lv.error}`}`);
  }
  if (lv && !lv.running) out.push('guests: not listed (libvirtd is not running)');
  else if (lv && lv.answering === false) out.push('guests: not listed (libvirtd does not answer)');
  if (lv === null || lv.answering) {
    out.push(s.guests.length > 0 ? 'guests:' : s.qmp && !s.qmp.exists ? `guests: none (${s.qmp.guestsDir} is not a directory)` : 'guests: none');
    for (const g of s.guests) out.push(`  ${g.name}  ${g.stateDetail || g.state}${g.staleImage ? `  [${g.staleImage} is older than the running guest: never restored]` : g.savedImage ? '  (saved image)' : ''}${s.guests.some((x) => x.uri !== g.uri) ? `  ${g.uri}` : ''}`);
  }
  for (const e of s.guestErrors) out.push(`guests: cannot list ${e}`);
  if (s.pending.length > 0) {
    out.push('waiting to be restored at the next start:');
    for (const p of s.pending) out.push(`  ${p.name}  (${p.action}; was ${p.stateBefore})  ${p.uri}`);
  }
  return `${out.join('\n')}\n`;
}
