// "Is this pid still ours": who a process is, from /proc. A pid alone names
// nobody for long (it is reused), so every signal rc.libvirt sends goes to a
// pid first checked here: alive (a zombie counts as ended), and the program
// or command line the caller expects. /proc/PID/stat is read safely: the
// command name (field 2) may hold spaces and parentheses, so the fields are
// counted from after its last ')' (proc(5)).
import { readdir, readFile, readlink, unlink } from 'node:fs/promises';
import { basename } from 'node:path';

/** The file operations the checks use (memfs in unit tests). */
export interface ProcFs {
  readFile(path: string): Promise<string>;
  readlink(path: string): Promise<string>;
  unlink(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
}

/** The real file system. */
export const NODE_PROC_FS: ProcFs = {
  readFile: (p) => readFile(p, 'utf8'),
  readlink: (p) => readlink(p),
  unlink: (p) => unlink(p),
  readdir: (p) => readdir(p),
};

/** The fields of /proc/PID/stat rc.libvirt uses. */
export interface ProcStat {
  /** R, S, D, T, Z (zombie), X (dead)... */
  state: string;
  ppid: number;
  /** Clock ticks after boot: with the pid, identifies a process across pid reuse. */
  startTime: string;
}

/** Parse the text of /proc/PID/stat; undefined when it is not one. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).split(' ');
  const [state, ppid] = fields;
  const startTime = fields[19];
  if (!state || ppid === undefined || startTime === undefined) return undefined;
  return { state, ppid: Number(ppid), startTime };
}

/** Whether a stat state is a process that has ended (a zombie waiting to be reaped counts as ended). */
export function hasEnded(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X';
}

/** Who a process is, as /proc tells. */
export interface ProcessInfo {
  stat: ProcStat;
  /** Base name of /proc/PID/exe (a binary replaced by an upgrade still counts); absent for kernel threads and other users' processes. */
  exe?: string;
  /** /proc/PID/comm (15 characters at most). */
  comm?: string;
  /** /proc/PID/cmdline, split at its NULs. */
  argv?: string[];
}

/** The program name of a /proc/PID/exe link (a binary replaced by an upgrade still counts). */
export function programOfExe(link: string): string {
  return basename(link.replace(/ \(deleted\)$/, ''));
}

/** What /proc says of `pid`, ended (zombie) or not; undefined when there is no such process. */
export async function readProcess(pid: number, fs: ProcFs = NODE_PROC_FS): Promise<ProcessInfo | undefined> {
  let stat: ProcStat | undefined;
  try {
    stat = parseProcStat(await fs.readFile(`/proc/${pid}/stat`));
  } catch {
    return undefined;
  }
  if (!stat) return undefined;
  const info: ProcessInfo = { stat };
  try {
    info.exe = programOfExe(await fs.readlink(`/proc/${pid}/exe`));
  } catch {
    /* kernel threads, other users' processes: no exe */
  }
  try {
    info.comm = (await fs.readFile(`/proc/${pid}/comm`)).trim();
  } catch {
    /* gone meanwhile */
  }
  try {
    info.argv = (await fs.readFile(`/proc/${pid}/cmdline`)).split('\0');
  } catch {
    /* gone meanwhile */
  }
  return info;
}

/** Who a live process is; undefined when there is no such live process (a zombie counts as ended). */
export async function processProgram(pid: number, fs: ProcFs = NODE_PROC_FS): Promise<ProcessInfo | undefined> {
  const info = await readProcess(pid, fs);
  return info && !hasEnded(info.stat) ? info : undefined;
}

/** A live process's start time in clock ticks since boot (/proc/PID/stat field 22), or undefined when it does not run. */
export async function processStartTime(pid: number, fs: ProcFs = NODE_PROC_FS): Promise<string | undefined> {
  try {
    const stat = parseProcStat(await fs.readFile(`/proc/${pid}/stat`));
    return stat && !hasEnded(stat) ? stat.startTime : undefined;
  } catch {
    return undefined;
  }
}
