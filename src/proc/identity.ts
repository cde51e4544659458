// /proc/PID/stat, read safely: the command name (field 2) may hold spaces and
// parentheses, so the fields are counted from after its last ')' (proc(5)).

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
