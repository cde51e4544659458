// The one table from a run's outcome or error to its exit code (cli-contract.md, "Exit codes").
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../../src/cli/errors.js';
import { EXIT, exitCodeOf, exitCodeOfError } from '../../../src/cli/exit-codes.js';
import { ConfigError } from '../../../src/config/errors.js';
import { NotInstalledError, NotRootError, RunLockError } from '../../../src/rc/errors.js';
import { NotReachableError } from '../../../src/domain/errors.js';

describe('exit codes', () => {
  it('maps each outcome rc returns', () => {
    expect(exitCodeOf('ok')).toBe(EXIT.ok);
    expect(exitCodeOf('failed')).toBe(EXIT.failure);
    expect(exitCodeOf('not-running')).toBe(EXIT.notRunning);
  });

  it('maps each error a layer raises for the user, and nothing else', () => {
    expect(exitCodeOfError(new UsageError('x'))).toBe(2);
    expect(exitCodeOfError(new NotRootError())).toBe(4);
    expect(exitCodeOfError(new NotInstalledError('x'))).toBe(5);
    expect(exitCodeOfError(new ConfigError('x'))).toBe(6);
    expect(exitCodeOfError(new RunLockError('x'))).toBe(1);
    // Anything else is an internal error: main prints its stack and exits 1.
    expect(exitCodeOfError(new NotReachableError('x'))).toBeUndefined();
    expect(exitCodeOfError(new Error('x'))).toBeUndefined();
    expect(exitCodeOfError('a string')).toBeUndefined();
  });
});
