// What every command runs with: the settings, the log (console + syslog), the
// root and program checks, the one-run-at-a-time lock, and the abort signal
// (SIGINT/SIGTERM). The CLI runs each command's body in withRun() with the
// needs its command table declares.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { CliOptions } from '../config/cli-options.js';
import { loadSettings, type ReadFileFn } from '../config/load.js';
import type { Settings } from '../config/settings.js';
import { createLog, type Log } from '../util/log.js';
import type { GuestStepContext } from './guest-steps.js';
import { NotInstalledError, NotRootError } from './errors.js';
import { acquireRunLock, LOCK_WAIT_MS, runBoundMs } from './run-lock.js';

/** Everything a command runs with, from the command line and the process. */
export interface CommandContext {
  command: string;
  options: CliOptions;
  env: NodeJS.ProcessEnv;
  /** Aborts when the run is asked to stop (SIGINT/SIGTERM): no new work starts. */
  signal: AbortSignal;
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
}

/** How a command went; the CLI turns it into the exit code (cli/exit-codes.ts). */
export type RunOutcome = 'ok' | 'failed' | 'not-running';

/** A program a command needs, by its setting. */
export type ProgramName = 'virsh' | 'libvirtd' | 'virtlogd' | 'virtlockd';

/** What a command needs before it may run. */
export interface RunNeeds {
  /** Refuse to run unless root (exit 4). */
  root: boolean;
  /** Programs that must exist (exit 5 otherwise); a function of the settings when that depends on them (DRIVER). */
  programs: readonly ProgramName[] | ((settings: Settings) => readonly ProgramName[]);
  /** Take the one-run-at-a-time lock. */
  lock: boolean;
}

/** Everything a command body gets; it is also a GuestStepContext. */
export interface RunContext extends GuestStepContext {
  command: string;
  json: boolean;
  verbosity: number;
  stderr: NodeJS.WritableStream;
}

/** Injection points for tests. */
export interface RunDeps {
  readFile?: ReadFileFn;
  isRoot?: () => boolean;
  /** Resolve a program name or path to an executable path, or undefined when missing. */
  findProgram?: (nameOrPath: string, env: NodeJS.ProcessEnv) => Promise<string | undefined>;
  /** Send messages to syslog through this `logger` (false: not at all; default: found on the system). */
  logger?: string | false;
  lockWaitMs?: number;
  /** How long a shutdown command waits for a holder it asked to end, or one without a bound (default TAKEOVER_WAIT_MS). */
  takeoverWaitMs?: number;
}

/** Set up a run (settings, log, checks, lock), run `body`, and always release the lock and flush the log. */
export async function withRun<T>(
  cmd: CommandContext,
  needs: RunNeeds,
  body: (run: RunContext) => Promise<T>,
  deps: RunDeps = {},
): Promise<T> {
  const loadInput: Parameters<typeof loadSettings>[0] = { options: cmd.options, env: cmd.env };
  if (deps.readFile) loadInput.readFile = deps.readFile;
  const settings = await loadSettings(loadInput);
  // With --json, stdout carries only the JSON document: messages go to stderr.
  const log = createLog({
    stdout: cmd.options.json ? cmd.stderr : cmd.stdout,
    stderr: cmd.stderr,
    verbosity: cmd.options.verbosity,
    ...(deps.logger !== undefined ? { logger: deps.logger } : {}),
  });
  try {
    if (needs.root && !(deps.isRoot ?? isRoot)()) {
      throw new NotRootError(`${cmd.command}: rc.libvirt must run as root (it manages system daemons)`);
    }
    await checkPrograms(settings, typeof needs.programs === 'function' ? needs.programs(settings) : needs.programs, cmd.env, deps.findProgram ?? findProgram);
    const bound = runBoundMs(cmd.command, settings);
    const lock = needs.lock
      ? await acquireRunLock({
          runDir: settings.runDir,
          command: cmd.command,
          signal: cmd.signal,
          waitMs: deps.lockWaitMs ?? LOCK_WAIT_MS,
          ...(bound !== undefined ? { boundMs: bound } : {}),
          ...(deps.takeoverWaitMs !== undefined ? { takeoverWaitMs: deps.takeoverWaitMs, unboundedHolderWaitMs: deps.takeoverWaitMs } : {}),
          onWait: (_h, how) => log.notice(how),
        })
      : undefined;
    // What was wrong with the lock was worked around; it is still an error of the run.
    for (const p of lock?.problems ?? []) log.error(p);
    try {
      const result = await body({
        command: cmd.command,
        settings,
        log,
        signal: cmd.signal,
        dryRun: cmd.options.dryRun,
        json: cmd.options.json,
        verbosity: cmd.options.verbosity,
        stdout: cmd.stdout,
        stderr: cmd.stderr,
      });
      return lock?.problems.length && result === 'ok' ? ('failed' as T) : result;
    } finally {
      await lock?.release();
    }
  } finally {
    await log.flush();
  }
}

/** Whether this process runs as root. */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

// Every needed program must exist; all missing ones are named at once.
async function checkPrograms(
  settings: Settings,
  programs: readonly ProgramName[],
  env: NodeJS.ProcessEnv,
  find: NonNullable<RunDeps['findProgram']>,
): Promise<void> {
  const missing: string[] = [];
  for (const p of programs) {
    if ((await find(settings[p], env)) === undefined) missing.push(`${p} (${settings[p]})`);
  }
  if (missing.length > 0) {
    throw new NotInstalledError(`not installed or not executable: ${missing.join(', ')}; install libvirt or set the program path (VIRSH, LIBVIRTD, VIRTLOGD, VIRTLOCKD)`);
  }
}

/** An executable's path: as given when it holds a slash, else searched on PATH. */
export async function findProgram(nameOrPath: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const candidates = nameOrPath.includes('/')
    ? [nameOrPath]
    : (env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).filter(Boolean).map((d) => join(d, nameOrPath));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return undefined;
}
