// `status`: the daemons (pid, up/down, pidfile problems), whether libvirtd
// answers, its guests (state, saved image) and the guests waiting to be
// restored. The JSON form is documented in docs/daemons.md and stays stable.
import type { Settings } from '../config/settings.js';
import { describeDaemons } from '../daemons/daemon-spec.js';
import { describePidfileProblem, describeStrays, findStrayProcesses, inspectPidfile } from '../daemons/pidfile.js';
import { askLibvirtd } from '../daemons/readiness.js';
import { createLibvirtDriver } from '../domain/libvirt/driver.js';
import type { GuestState } from '../domain/types.js';
import { pendingGuests, type PendingGuest } from './guest-steps.js';

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
}

/** The whole status (`status --json` prints it). */
export interface Status {
  /** Bumped only when a field changes meaning or goes away. */
  version: 1;
  daemons: DaemonStatus[];
  libvirtd: {
    running: boolean;
    /** null when it does not run, or when this user may not ask it (not root). */
    answering: boolean | null;
    error: string | null;
  };
  guests: GuestStatus[];
  /** Why the guests could not be listed (per URI), if so. */
  guestErrors: string[];
  pending: PendingGuest[];
}

const CALL_MS = 10_000;

/** Gather the status; never changes anything. */
export async function collectStatus(settings: Settings, signal: AbortSignal, isRoot: boolean): Promise<Status> {
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
  const status: Status = { version: 1, daemons, libvirtd: { running, answering: null, error: null }, guests: [], guestErrors: [], pending: [] };
  if (running) {
    const err = await askLibvirtd(settings, signal);
    if (err === undefined) status.libvirtd.answering = true;
    else if (!isRoot && /permission|denied|authentication/i.test(err)) status.libvirtd.error = `cannot ask libvirtd as this user: ${err}`;
    else {
      status.libvirtd.answering = false;
      status.libvirtd.error = err;
    }
  }
  if (status.libvirtd.answering) {
    for (const uri of settings.uris) {
      try {
        status.guests.push(...(await listGuestsForStatus(settings, uri, signal)));
      } catch (err) {
        status.guestErrors.push(`${uri}: ${(err as Error).message}`);
      }
    }
  }
  try {
    status.pending = await pendingGuests(settings);
  } catch (err) {
    status.guestErrors.push(`guests waiting to be restored: ${(err as Error).message}`);
  }
  return status;
}

// Every guest of one URI through the libvirt driver (each virsh call with a deadline).
async function listGuestsForStatus(settings: Settings, uri: string, signal: AbortSignal): Promise<GuestStatus[]> {
  const driver = createLibvirtDriver({ uri, virsh: settings.virsh, callTimeoutMs: CALL_MS });
  try {
    const guests = await driver.listGuests({ signal });
    return guests.map((g) => ({ uri, id: g.id, name: g.name, state: g.state, stateDetail: g.stateDetail, savedImage: g.hasSavedImage }));
  } finally {
    await driver.close();
  }
}

/** The exit code of `status`: 0 libvirtd runs (and answers, where we may ask), 1 it runs but does not answer, 3 it does not run. */
export function statusExitCode(s: Status): 0 | 1 | 3 {
  if (!s.libvirtd.running) return 3;
  return s.libvirtd.answering === false ? 1 : 0;
}

/** The status as lines for a person. */
export function formatStatus(s: Status): string {
  const out: string[] = [];
  for (const d of s.daemons) {
    out.push(`${d.name.padEnd(10)} ${d.running ? `running (pid ${d.pid})` : 'stopped'}${d.problem ? `  [${d.problem}]` : ''}`);
  }
  if (s.libvirtd.running) {
    out.push(`libvirtd ${s.libvirtd.answering === true ? 'answers' : s.libvirtd.answering === false ? `does not answer: ${s.libvirtd.error}` : `not asked: ${s.libvirtd.error}`}`);
  }
  if (s.libvirtd.answering) {
    out.push(s.guests.length === 0 ? 'guests: none' : 'guests:');
    for (const g of s.guests) out.push(`  ${g.name}  ${g.stateDetail || g.state}${g.savedImage ? '  (saved image)' : ''}${s.guests.some((x) => x.uri !== g.uri) ? `  ${g.uri}` : ''}`);
  }
  for (const e of s.guestErrors) out.push(`guests: cannot list ${e}`);
  if (s.pending.length > 0) {
    out.push('waiting to be restored at the next start:');
    for (const p of s.pending) out.push(`  ${p.name}  (${p.action}; was ${p.stateBefore})  ${p.uri}`);
  }
  return `${out.join('\n')}\n`;
}
