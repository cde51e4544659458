// Where our program's time goes, read from the stamped output of its last
// run in each scenario (the JSON's traces): startup and planning until the
// first guest action, the guests' work, the daemons.
import type { BenchResults } from './lib/results.js';

/** One trace cut into phases, ms. */
export interface Phases {
  key: string;
  phases: [string, number][];
}

// ms of the first line matching `re` (after `from` ms), or undefined.
function at(trace: [number, string][], re: RegExp, last = false, from = 0): number | undefined {
  const hits = trace.filter(([t, l]) => t >= from && re.test(l));
  return (last ? hits[hits.length - 1] : hits[0])?.[0];
}

// Differences of consecutive marks, named by the later mark; missing marks are skipped.
function between(marks: [string, number | undefined][]): [string, number][] {
  const out: [string, number][] = [];
  let prev = 0;
  for (const [name, t] of marks) {
    if (t === undefined) continue;
    out.push([name, t - prev]);
    prev = t;
  }
  return out;
}

// The phases of every stop, start and guests_shutdown trace of a run.
export function tracePhases(r: BenchResults): Phases[] {
  const out: Phases[] = [];
  for (const [key, trace] of Object.entries(r.traces)) {
    if (key.startsWith('qmp')) continue;
    if (key.startsWith('stop') || key.startsWith('guests_shutdown')) {
      const firstAction = at(trace, /: (save|shutdown)$/);
      const lastDone = at(trace, /: (saved|shutdown) \(\d/, true);
      const daemonsFrom = at(trace, /^stopping libvirtd/);
      // The last of the daemons to go (virtlogd and virtlockd stop together after libvirtd).
      const daemonsTo = at(trace, /^(virtlockd|virtlogd) stopped/, true);
      const end = at(trace, /^(stop|guests_shutdown|guests shut down).*(done|in \d)/, true) ?? trace[trace.length - 1]?.[0];
      out.push({ key, phases: between([
        ['startup, listing, plan', firstAction],
        ['guests (first action to last result)', lastDone],
        ['summary, journal, to the first daemon', daemonsFrom],
        ['daemons (SIGTERM to exit)', daemonsTo],
        ['modules, end', end],
      ]) });
    } else if (key.startsWith('start')) {
      out.push({ key, phases: between([
        ['startup, settings, checks', at(trace, /^starting virtlockd/)],
        ['daemons started, libvirtd answers', at(trace, /^libvirtd answers/)],
        ['journal, listing', at(trace, /: (restore|start)$/)],
        ['restores (first to last)', at(trace, /: (restored|started) \(\d/, true)],
        ['summary, end', trace[trace.length - 1]?.[0]],
      ]) });
    }
  }
  return out;
}

// The phases as a Markdown list, one line per trace.
export function renderPhases(r: BenchResults): string {
  const lines = tracePhases(r).map((p) => `- **${p.key}**: ${p.phases.map(([n, ms]) => `${n} ${(ms / 1000).toFixed(2)} s`).join(' · ')}`);
  return lines.join('\n');
}
