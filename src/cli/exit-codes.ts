// LSB exit codes (cli-contract.md, "Exit codes"), and the one table from a
// run's outcome or error to its exit code. Only the CLI chooses exit codes.
import { ConfigError } from '../config/errors.js';
import { NotInstalledError, NotRootError, RunLockError } from '../rc/errors.js';
import type { RunOutcome } from '../rc/run-context.js';
import { UsageError } from './errors.js';

/** The exit codes rc.libvirt uses. */
export const EXIT = Object.freeze({
  ok: 0,
  failure: 1,
  usage: 2,
  notRunning: 3,
  notRoot: 4,
  notInstalled: 5,
  badConfig: 6,
});

/** One of the values of EXIT. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

const OUTCOMES: Readonly<Record<RunOutcome, ExitCode>> = {
  ok: EXIT.ok,
  failed: EXIT.failure,
  'not-running': EXIT.notRunning,
  // A command that runs at host shutdown handled the guests, but went on with a setting at its default, or without a program.
  'done-bad-setting': EXIT.badConfig,
  'done-program-missing': EXIT.notInstalled,
};

// Errors the run reports in plain words; any other error is an internal error (exit 1, with its stack).
const ERRORS: readonly (readonly [new (...args: never[]) => Error, ExitCode])[] = [
  [UsageError, EXIT.usage],
  [NotRootError, EXIT.notRoot],
  [NotInstalledError, EXIT.notInstalled],
  [ConfigError, EXIT.badConfig],
  [RunLockError, EXIT.failure],
];

/** The exit code of a run's outcome. */
export function exitCodeOf(outcome: RunOutcome): ExitCode {
  return OUTCOMES[outcome];
}

/** The exit code of an error the run reports in plain words, or undefined for an internal error. */
export function exitCodeOfError(err: unknown): ExitCode | undefined {
  return ERRORS.find(([cls]) => err instanceof cls)?.[1];
}
