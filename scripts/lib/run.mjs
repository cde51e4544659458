// Commands in the project's own scripts (test bed setup, demo, bench) run through zx. `runner()`
// gives a tagged template like zx's $ that, when the command fails, throws CommandFailed naming
// the command and its output; `stopOnError` ends the script with that message.
import { $ } from 'zx';

// How many lines of a failed command's output the message keeps (its end).
const OUTPUT_LINES = 40;

/** A command that failed: its text, how it ended and the end of its output. */
export class CommandFailed extends Error {
  constructor(cmd, result, { outputShown = false } = {}) {
    const how = result?.signal ? `was killed by ${result.signal}` : `exited ${result?.exitCode ?? '?'}`;
    const output = (result?.stdall ?? `${result?.stderr ?? ''}${result?.stdout ?? ''}`).trimEnd().split('\n');
    const tail = output.length > OUTPUT_LINES ? ['...', ...output.slice(-OUTPUT_LINES)] : output;
    const shown = outputShown ? ' (its output is above)'
      : tail.join('\n').trim() === '' ? ' (no output)' : `; its output:\n${tail.map((l) => `  ${l}`).join('\n')}`;
    super(`\`${cmd}\` ${how}${shown}`);
    this.name = 'CommandFailed';
    this.cmd = cmd;
    this.exitCode = result?.exitCode ?? null;
  }
}

/**
 * A tagged template running one command with zx (bash, `set -euo pipefail`, arguments quoted);
 * resolves with zx's output (stdout, stderr, exitCode) or throws CommandFailed.
 * `opts` are zx's options: `{ verbose: true }` shows the command and its output as it runs,
 * `{ stdio: 'inherit' }` gives it this terminal (its output is then not kept: the error says it is
 * above), `{ nothrow: true }` resolves whatever the exit code, `{ cwd }`, `{ env }`, ...;
 * `run({ cwd })` is the same runner with more options.
 */
export function runner(opts = {}) {
  const zx = $({ verbose: false, quiet: !opts.verbose, ...opts });
  // Called with an object instead of a template: the same runner with more options, like zx's $.
  const outputShown = opts.verbose === true || opts.stdio === 'inherit';
  return (pieces, ...args) => (Array.isArray(pieces) ? runOne(zx, pieces, args, outputShown) : runner({ ...opts, ...pieces }));
}

// Runs one command of a runner; a failure becomes CommandFailed.
async function runOne(zx, pieces, args, outputShown) {
  const p = zx(pieces, ...args);
  try {
    return await p;
  } catch (err) {
    throw new CommandFailed(p.cmd, err, { outputShown });
  }
}

/** Runs `main`; an error ends the script with `NAME: error: MESSAGE` on stderr and exit code 1. */
export async function stopOnError(name, main) {
  try {
    const code = await main();
    process.exitCode = typeof code === 'number' ? code : 0;
  } catch (err) {
    process.stderr.write(`${name}: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
