// Errors that end a run with a given exit code; the CLI prints them and exits.
import { EXIT, type ExitCode } from './exit-codes.js';

/** An error that carries the exit code the run ends with. */
export class ExitError extends Error {
  constructor(readonly exitCode: ExitCode, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = new.target.name;
  }
}

/** Bad arguments (exit 2). */
export class UsageError extends ExitError {
  constructor(message: string) {
    super(EXIT.usage, message);
  }
}

/** A bad settings file, environment variable or option value (exit 6); the message names where. */
export class ConfigError extends ExitError {
  constructor(message: string, readonly where?: { file?: string; line?: number; key?: string }) {
    super(EXIT.badConfig, message);
  }
}

/** Root is needed (exit 4). */
export class NotRootError extends ExitError {
  constructor(message = 'rc.libvirt must run as root') {
    super(EXIT.notRoot, message);
  }
}

/** A program rc.libvirt needs is missing (exit 5). */
export class NotInstalledError extends ExitError {
  constructor(message: string) {
    super(EXIT.notInstalled, message);
  }
}

