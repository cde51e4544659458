// `status`: the daemons (pid, up/down, pidfile problems), whether libvirtd
// answers, its guests (state, saved image) and the guests waiting to be
// restored. The JSON form is documented in docs/daemons.md and stays stable.
import type { Settings } from '../config/settings.js';
import { describeDaemons } from '../daemons/daemon-spec.js';
import { describePidfileProblem, inspectPidfile } from '../daemons/pidfile.js';
import { askLibvirtd } from '../daemons/readiness.js';
import { describeRun, runProcess } from '../util/run.js';
import { pendingGuests, type PendingGuest } from './guest-steps.js';

/** One daemon in the status. */
export interface DaemonStatus {
  name: string;
  running: boolean;
  pid: number | null;
  pidfile: string;
  /** A stale, foreign or invalid pidfile, in words; null when fine. */
  problem: string | null;
}

/** One guest in the status. */
export interface GuestStatus {
  uri: string;
  name: string;
  state: 'running' | 'paused' | 'shutoff' | 'other';
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
    daemons.push({
      name: spec.name,
      running: st.state === 'running',
      pid: st.state === 'running' ? st.pid : null,
      pidfile: spec.pidfile,
      problem: describePidfileProblem(spec, st) ?? null,
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

// Names by state through virsh's list filters (one name per line, so names with spaces are safe).
async function listGuestsForStatus(settings: Settings, uri: string, signal: AbortSignal): Promise<GuestStatus[]> {
  const names = async (...filters: string[]): Promise<string[]> => {
    const r = await runProcess([settings.virsh, '-c', uri, 'list', '--name', ...filters], {
      timeoutMs: CALL_MS,
      signal,
      env: { ...process.env, LC_ALL: 'C' },
    });
    if (r.exitCode !== 0) throw new Error(describeRun(r));
    return r.stdout.split('\n').filter((l) => l !== '');
  };
  const all = await names('--all');
  const runningSet = new Set(await names('--state-running'));
  const pausedSet = new Set(await names('--state-paused'));
  const offSet = new Set(await names('--all', '--state-shutoff'));
  const savedSet = new Set(await names('--all', '--with-managed-save'));
  return all.map((name) => ({
    uri,
    name,
    state: runningSet.has(name) ? 'running' : pausedSet.has(name) ? 'paused' : offSet.has(name) ? 'shutoff' : 'other',
    savedImage: savedSet.has(name),
  }));
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
    for (const g of s.guests) out.push(`  ${g.name}  ${g.state}${g.savedImage ? '  (saved image)' : ''}${s.guests.some((x) => x.uri !== g.uri) ? `  ${g.uri}` : ''}`);
  }
  for (const e of s.guestErrors) out.push(`guests: cannot list ${e}`);
  if (s.pending.length > 0) {
    out.push('waiting to be restored at the next start:');
    for (const p of s.pending) out.push(`  ${p.name}  (${p.action}; was ${p.stateBefore})  ${p.uri}`);
  }
  return `${out.join('\n')}\n`;
}
