// Counts the virsh processes our program spawns: a wrapper script, given to
// it as VIRSH, appends each invocation's arguments to a log and runs the
// real virsh.
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findProgram } from '../../test/helpers/process.js';

/** virsh invocations, in all and by virsh command. */
export interface VirshCount {
  total: number;
  byCommand: Record<string, number>;
}

// virsh's global options that take a value as the next word.
const WITH_VALUE = new Set(['-c', '--connect', '-d', '--debug', '-e', '--escape', '-k', '--keepalive-interval', '-K', '--keepalive-count', '-l', '--log']);

// The virsh command of one logged invocation (its arguments joined by spaces): the first word that is not a global option; `(shell)` when there is none (commands read from stdin).
export function virshCommand(line: string): string {
  const words = line.trim().split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    const w = words[i] ?? '';
    if (WITH_VALUE.has(w)) {
      i++;
      continue;
    }
    if (w.startsWith('-')) continue;
    return w.replace(/;$/, '');
  }
  return '(shell)';
}

// Counts the logged invocations (one per line).
export function countVirshCalls(log: string): VirshCount {
  const byCommand: Record<string, number> = {};
  let total = 0;
  for (const line of log.split('\n')) {
    if (line.trim() === '') continue;
    total++;
    const cmd = virshCommand(line);
    byCommand[cmd] = (byCommand[cmd] ?? 0) + 1;
  }
  return { total, byCommand };
}

/** The wrapper: its path (for VIRSH) and what it logged. */
export interface VirshCounter {
  path: string;
  /** Counts what was logged since the last take() and empties the log. */
  take(): Promise<VirshCount>;
}

// Writes the wrapper into `dir`.
export async function virshCounter(dir: string): Promise<VirshCounter> {
  const real = findProgram('virsh');
  if (!real) throw new Error('virsh is not installed; run: node testbed/setup.mjs');
  const path = join(dir, 'virsh-counting');
  const log = join(dir, 'virsh-calls.log');
  // One line per call, appended in one write (O_APPEND keeps concurrent lines whole; dash's
  // printf would write a long batch apart from its newline).
  await writeFile(path, `#!/bin/sh\nline="$*\n"\nprintf '%s' "$line" >> '${log}'\nexec '${real}' "$@"\n`);
  await chmod(path, 0o755);
  return {
    path,
    async take() {
      const text = await readFile(log, 'utf8').catch(() => '');
      await rm(log, { force: true });
      return countVirshCalls(text);
    },
  };
}
