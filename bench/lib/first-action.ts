// Spawn → first guest action, read from our program's stamped output (ms
// since the spawn, see timed.ts trace()): with -v, the debug line of the
// first `virsh managedsave`, `shutdown` or `start` call (printed just before
// the call is spawned); only without it, the first per-guest progress line
// (`NAME: save`, `NAME: shutdown`, `NAME: restore`, `NAME: start`).

/** A trace: [ms since the spawn, line] (stderr lines start with `! `). */
export type Trace = readonly (readonly [number, string])[];

// -v's `run: virsh -q -c URI managedsave --verbose --domain=…` and the like.
const VIRSH_ACTION = /^run: .*\s(managedsave|shutdown|start)(\s|$)/;
// The plain progress line a guest's action begins with.
const PROGRESS_ACTION = /^\S.*: (save|shutdown|restore|start)$/;
// start's line once libvirtd answers.
const LIBVIRTD_ANSWERS = /^libvirtd answers/;

// ms of the first line matching `re`, or undefined.
function firstAt(trace: Trace, re: RegExp): number | undefined {
  return trace.find(([, l]) => re.test(l))?.[0];
}

// ms from the spawn to the first guest action: the first virsh action call (-v); without -v, the first progress line (printed as a guest's turn begins, before any check that precedes the call); undefined when there is neither.
export function firstActionMs(trace: Trace): number | undefined {
  return firstAt(trace, VIRSH_ACTION) ?? firstAt(trace, PROGRESS_ACTION);
}

// start: ms from libvirtd answering to the first restore, or undefined when either line is missing.
export function firstActionAfterAnswerMs(trace: Trace): number | undefined {
  const answered = firstAt(trace, LIBVIRTD_ANSWERS);
  const first = firstActionMs(trace);
  return answered === undefined || first === undefined ? undefined : first - answered;
}

/** Samples of one scenario and N. */
export interface FirstActionSamples {
  ms: number[];
  afterAnswerMs: number[];
}

// Adds a run's marks to the samples (a run without them adds nothing).
export function addFirstAction(s: FirstActionSamples, trace: Trace, start = false): void {
  const ms = firstActionMs(trace);
  if (ms !== undefined) s.ms.push(ms);
  const after = start ? firstActionAfterAnswerMs(trace) : undefined;
  if (after !== undefined) s.afterAnswerMs.push(after);
}
