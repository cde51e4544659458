// Runs the built rc.libvirt (dist/rc.libvirt) as a child process: argv array,
// no shell; resolves with its exit code and output; optional signal mid-run.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './testbed.js';

/** The bundle `npm run build` makes. */
export const RC_BIN = join(repoRoot, 'dist', 'rc.libvirt');

/** What a run of rc.libvirt did. */
export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run rc.libvirt with `args`; `onStdout` sees the output as it comes and may send the child a signal; `program`: what to run instead of the bundle (the shell script rc/rc.libvirt, pointed at the bundle by RC_LIBVIRT_BUNDLE in `env`). */
export function runRc(args: readonly string[], env: NodeJS.ProcessEnv, opts: { timeoutMs?: number; program?: string; onStdout?: (all: string, kill: (s: NodeJS.Signals) => void) => void } = {}): Promise<CliRun> {
  if (!existsSync(RC_BIN)) throw new Error(`${RC_BIN} is missing: run \`npm run build\` first (npm test does)`);
  return new Promise((resolve, reject) => {
    const child = spawn(opts.program ?? RC_BIN, [...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const kill = (s: NodeJS.Signals): void => {
      child.kill(s);
    };
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      opts.onStdout?.(stdout, kill);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
