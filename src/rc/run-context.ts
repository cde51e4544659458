// What every command runs with: the settings, the log (console + syslog), the
// root and program checks, the one-run-at-a-time lock, and the abort signal
// (SIGINT/SIGTERM). The CLI runs each command's body in withRun() with the
// needs its command table declares.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { CliOptions } from '../config/cli-options.js';
import type { ConfigError } from '../config/errors.js';
import { combinedError, readSettings, type ReadFileFn } from '../config/load.js';
import type { Settings } from '../config/settings.js';
import { libvirtUris, qmpRunDir } from '../guests/open-drivers.js';
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

/**
 * How a command went; the CLI turns it into the exit code (cli/exit-codes.ts).
 * `done-bad-setting` and `done-program-missing`: a command that runs at host
 * shutdown did all its work, but with a bad setting at its default, or without
 * a program it names; `failed` (a guest destroyed or failed, a step failed) wins over both.
 */
export type RunOutcome = 'ok' | 'failed' | 'not-running' | 'done-bad-setting' | 'done-program-missing';

/** What went wrong around a run that did not stop it (a command that runs at host shutdown). */
export interface RunFaults {
  /** Every settings error: each was reported, and its setting's default used. */
  settings: readonly string[];
  /** Every missing program, as `name (path)`. */
  programs: readonly string[];
}

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
  /**
   * A command that runs at host shutdown (stop, shutdown, guests_shutdown): bad
   * settings and missing programs never keep it from the guests. Each is
   * reported (console at every verbosity, syslog), the setting's default is
   * used, and the outcome says so at the end. Other commands refuse to run.
   */
  atShutdown?: boolean;
}

/** Everything a command body gets; it is also a GuestStepContext. */
export interface RunContext extends GuestStepContext {
  command: string;
  json: boolean;
  verbosity: number;
  stderr: NodeJS.WritableStream;
  /** What was wrong around the run that it went on with (only at a command that runs at host shutdown). */
  faults: RunFaults;
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

/** Run a command's body in withRun(), its outcome telling also what the run went on without. */
export async function runCommand(cmd: CommandContext, needs: RunNeeds, body: (run: RunContext) => Promise<RunOutcome>, deps: RunDeps = {}): Promise<RunOutcome> {
  return withRun(cmd, needs, async (run) => {
    const outcome = withFaults(await body(run), run.faults);
    // Said again at the end, where a reader of the console or syslog looks first.
    if (outcome === 'done-bad-setting') run.log.error(`${cmd.command}: the settings had ${run.faults.settings.length} error${run.faults.settings.length === 1 ? '' : 's'} (see above); their defaults were used`);
    if (outcome === 'done-bad-setting' || outcome === 'done-program-missing') {
      if (run.faults.programs.length > 0) run.log.error(`${cmd.command}: ran without ${run.faults.programs.join(', ')}`);
    }
    return outcome;
  }, deps);
}

/** A body's outcome, given what the run went on without: a bad setting outranks a missing program; failures outrank both. */
export function withFaults(outcome: RunOutcome, faults: RunFaults): RunOutcome {
  if (outcome !== 'ok') return outcome;
  if (faults.settings.length > 0) return 'done-bad-setting';
  if (faults.programs.length > 0) return 'done-program-missing';
  return outcome;
}

/** Set up a run (settings, log, checks, lock), run `body`, and always release the lock and flush the log. */
export async function withRun<T>(
  cmd: CommandContext,
  needs: RunNeeds,
  body: (run: RunContext) => Promise<T>,
  deps: RunDeps = {},
): Promise<T> {
  const loadInput: Parameters<typeof readSettings>[0] = { options: cmd.options, env: cmd.env };
  if (deps.readFile) loadInput.readFile = deps.readFile;
  const report = await readSettings(loadInput);
  // Any other command refuses bad settings before it does anything, naming every error at once.
  if (!needs.atShutdown && report.errors.length > 0) throw combinedError(report.errors);
  const settings = report.settings;
  // With --json, stdout carries only the JSON document: messages go to stderr.
  const log = createLog({
    stdout: cmd.options.json ? cmd.stderr : cmd.stdout,
    stderr: cmd.stderr,
    verbosity: cmd.options.verbosity,
    ...(deps.logger !== undefined ? { logger: deps.logger } : {}),
  });
  const faults: RunFaults = { settings: report.errors.map((e) => e.message), programs: [] };
  try {
    for (const w of report.warnings) log.warn(w);
    reportSettingsFaults(cmd.command, report.errors, settings, log);
    if (needs.root && !(deps.isRoot ?? isRoot)()) {
      throw new NotRootError(`${cmd.command}: rc.libvirt must run as root (it manages system daemons)`);
    }
    const missing = await missingPrograms(settings, typeof needs.programs === 'function' ? needs.programs(settings) : needs.programs, cmd.env, deps.findProgram ?? findProgram);
    if (missing.length > 0) {
      const what = `not installed or not executable: ${missing.join(', ')}; install libvirt or set the program path (VIRSH, LIBVIRTD, VIRTLOGD, VIRTLOCKD)`;
      if (!needs.atShutdown) throw new NotInstalledError(what);
      log.error(`${what}: ${cmd.command} goes on with the guests (exit 5 at the end)`);
      faults.programs = missing;
    }
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
    for (const n of lock?.notes ?? []) log.warn(n);
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
        faults,
      });
      // A lock problem is a failure of the run: it outranks a bad setting or a missing program.
      const done = result === 'ok' || result === 'done-bad-setting' || result === 'done-program-missing';
      return lock?.problems.length && done ? ('failed' as T) : result;
    } finally {
      await lock?.release();
    }
  } finally {
    await log.flush();
  }
}

// At a command that runs at host shutdown: every settings error, what is used instead, and the drivers when DRIVER or URIS was bad.
function reportSettingsFaults(command: string, errors: readonly ConfigError[], settings: Settings, log: Log): void {
  if (errors.length === 0) return;
  for (const e of errors) log.error(`${e.message}: ignored, the setting keeps its default`);
  log.error(`${command}: ${errors.length} error${errors.length === 1 ? '' : 's'} in the settings (${settings.configFile}): ${command} goes on with the defaults for them (exit 6 at the end)`);
  if (settings.everyDriver) {
    log.error(`DRIVER or URIS is bad: acting on every guest found: libvirt at ${libvirtUris(settings).join(' ')}, and QEMUs running from ${qmpRunDir(settings)} (qmp driver, definitions in ${settings.guestsDir})`);
  }
}

/** Whether this process runs as root. */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

// Every needed program that is missing, as `name (path)`: all of them at once.
async function missingPrograms(
  settings: Settings,
  programs: readonly ProgramName[],
  env: NodeJS.ProcessEnv,
  find: NonNullable<RunDeps['findProgram']>,
): Promise<string[]> {
  // Looked up all at once; named in the order asked.
  const found = await Promise.all(programs.map((p) => find(settings[p], env)));
  return programs.filter((_p, i) => found[i] === undefined).map((p) => `${p} (${settings[p]})`);
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
