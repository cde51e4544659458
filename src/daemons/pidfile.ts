// Reading a daemon's pidfile safely: a pid counts only when that process is
// alive and is that daemon (/proc/PID/exe, else /proc/PID/comm). A stale,
// foreign or garbled pidfile is reported and never leads to signalling anyone.
import { programName, type DaemonSpec } from './daemon-spec.js';
import { NODE_PROC_FS, parseProcStat, processProgram, programOfExe, type ProcFs } from '../proc/identity.js';

/** What a daemon's pidfile says, checked against /proc. */
export type PidfileState =
  | { state: 'missing' }
  | { state: 'running'; pid: number }
  /** No such process (or only a zombie): the daemon died without removing its pidfile. */
  | { state: 'stale'; pid: number }
  /** The pid lives, but is another program: never signalled. */
  | { state: 'foreign'; pid: number; program: string }
  /** Not a pid at all. */
  | { state: 'invalid'; reason: string };

/** The pid in a pidfile's text, or why there is none. */
export function parsePidfile(text: string): { pid: number } | { error: string } {
  const t = text.trim();
  if (t === '') return { error: 'empty' };
  if (!/^[0-9]+$/.test(t)) return { error: `not a process id: ${JSON.stringify(t.slice(0, 40))}` };
  const pid = Number(t);
  if (!Number.isSafeInteger(pid) || pid < 2 || pid > 4194304) return { error: `not a valid process id: ${t}` };
  return { pid };
}

/** Whether a process is the given daemon: its exe (or, without one, its 15-character comm) names the daemon's program. */
export function isDaemonProgram(who: { exe?: string; comm?: string }, spec: DaemonSpec): boolean {
  const name = programName(spec);
  if (who.exe !== undefined) return who.exe === name;
  return who.comm !== undefined && who.comm === name.slice(0, 15);
}

/** Read and check a daemon's pidfile. */
export async function inspectPidfile(spec: DaemonSpec, fs: ProcFs = NODE_PROC_FS): Promise<PidfileState> {
  let text: string;
  try {
    text = await fs.readFile(spec.pidfile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'invalid', reason: `cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
  }
  const parsed = parsePidfile(text);
  if ('error' in parsed) return { state: 'invalid', reason: parsed.error };
  const who = await processProgram(parsed.pid, fs);
  if (!who) return { state: 'stale', pid: parsed.pid };
  if (!isDaemonProgram(who, spec)) return { state: 'foreign', pid: parsed.pid, program: who.exe ?? who.comm ?? '?' };
  return { state: 'running', pid: parsed.pid };
}

/** A sentence about a pidfile that does not name a running daemon, for the log. */
export function describePidfileProblem(spec: DaemonSpec, st: PidfileState): string | undefined {
  switch (st.state) {
    case 'stale':
      return `${spec.pidfile} names pid ${st.pid}, which no longer runs (stale pidfile)`;
    case 'foreign':
      return `${spec.pidfile} names pid ${st.pid}, which is ${st.program}, not ${spec.name}: that process is left alone`;
    case 'invalid':
      return `${spec.pidfile} is not a valid pidfile (${st.reason})`;
    default:
      return undefined;
  }
}

/** Remove a pidfile that does not name a running daemon (stale, foreign or invalid); returns what was said about it. */
export async function clearBadPidfile(spec: DaemonSpec, st: PidfileState, fs: ProcFs = NODE_PROC_FS): Promise<string | undefined> {
  const problem = describePidfileProblem(spec, st);
  if (problem === undefined) return undefined;
  try {
    await fs.unlink(spec.pidfile);
    return `${problem}; removed it`;
  } catch (err) {
    return `${problem}; could not remove it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
}

/** Live processes of the daemon's program other than `except` (one started with another pidfile, or by hand). */
export async function findStrayProcesses(spec: DaemonSpec, except: number | undefined, fs: ProcFs = NODE_PROC_FS): Promise<number[]> {
  let entries: string[];
  try {
    entries = await fs.readdir('/proc');
  } catch {
    return [];
  }
  const pids = entries.filter((e) => /^\d+$/.test(e)).map(Number).filter((pid) => pid !== except);
  // Every process's program at once (a host runs hundreds): only a readable exe
  // counts here, comm alone is too weak to accuse a process.
  const exes = await Promise.all(pids.map((pid) => fs.readlink(`/proc/${pid}/exe`).then(programOfExe, () => undefined)));
  const found: number[] = [];
  for (const [i, pid] of pids.entries()) {
    if (exes[i] === undefined || !isDaemonProgram({ exe: exes[i] }, spec)) continue;
    const who = await processProgram(pid, fs);
    if (who?.exe === undefined || !isDaemonProgram({ exe: who.exe }, spec)) continue;
    // A child the daemon forked (before it execs a helper) is the daemon's business.
    if (except !== undefined && (await parentPid(pid, fs)) === except) continue;
    found.push(pid);
  }
  return found;
}

async function parentPid(pid: number, fs: ProcFs): Promise<number | undefined> {
  try {
    return parseProcStat(await fs.readFile(`/proc/${pid}/stat`))?.ppid;
  } catch {
    return undefined;
  }
}

/** A sentence about daemon processes the pidfile does not name. */
export function describeStrays(spec: DaemonSpec, pids: readonly number[]): string {
  return `${spec.name} also runs as pid ${pids.join(', ')}, which ${spec.pidfile} does not name (started with another pidfile, or by hand)`;
}
