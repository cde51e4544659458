// The rc.libvirt entry point: parses the command line, runs one command,
// prints errors and sets the exit code. The only place that does either.
import { COMMANDS } from './commands.js';
import type { CommandContext } from '../rc/run-context.js';
import { USAGE, type CommandLine } from './command-line.js';
import { quickParse } from './quick-args.js';
import { UsageError } from './errors.js';
import { EXIT, exitCodeOf, exitCodeOfError } from './exit-codes.js';
import { runController } from '../util/deadline.js';

// The --help text rendered at build time by scripts/bundle.mjs (100 columns): yargs' layout takes
// tens of ms at run time. Undefined outside the bundle.
declare const __RCL_HELP__: string | undefined;

/** Parse `args` (without node and the script) and run the command; resolves to the exit code. */
export async function main(args: string[], io: Pick<CommandContext, 'env' | 'stdout' | 'stderr'> = {
  env: process.env,
  stdout: process.stdout,
  stderr: process.stderr,
}): Promise<number> {
  // A console that went away (EPIPE: `stop | tee` and tee died; EIO: the
  // terminal hung up) loses console lines, never the run: messages still go
  // to syslog. The handlers stay: an error of a late write is reported after main() returns.
  for (const s of [io.stdout, io.stderr, process.stdout, process.stderr] as NodeJS.EventEmitter[]) {
    if (!s.listeners('error').includes(ignoreOutputError)) s.on('error', ignoreOutputError);
  }
  if (typeof __RCL_HELP__ === 'string' && args.length === 1 && (args[0] === '--help' || args[0] === '-h') && (process.stdout.columns ?? 100) >= 100) {
    io.stdout.write(__RCL_HELP__);
    return EXIT.ok;
  }
  // The usual command lines skip yargs (and its loading); yargs takes the rest, --help and every usage error.
  let parsed: CommandLine | undefined = quickParse(args);
  if (!parsed) {
    try {
      const { parseWithYargs } = await import('./yargs-args.js');
      const r = await parseWithYargs(args);
      if ('output' in r) {
        io.stdout.write(`${r.output}\n`);
        return EXIT.ok;
      }
      parsed = r;
    } catch (err) {
      return reportError(err, io.stderr);
    }
  }
  const { positional, options } = parsed;
  const name = positional[0];
  const spec = COMMANDS.find((c) => c.name === name);
  if (!spec || positional.length !== 1) {
    const what = name === undefined ? 'no command given' : positional.length > 1 ? `one command at a time, got: ${positional.join(' ')}` : `unknown command: ${name}`;
    return reportError(new UsageError(what), io.stderr);
  }

  const ac = runController();
  const onSignal = (sig: NodeJS.Signals): void => {
    safeWrite(io.stderr, `rc.libvirt: ${sig} received: no new work starts; bringing what runs to a safe state\n`);
    if (!ac.signal.aborted) ac.abort(new Error(`interrupted by ${sig}`));
  };
  // SIGHUP (the terminal or ssh session running us went away) is an interrupt
  // like SIGTERM: the run brings its guests to a safe state and journals what
  // was saved, instead of dying on the spot.
  for (const sig of INTERRUPTS) process.on(sig, onSignal);
  try {
    const [{ runCommand }, body] = await Promise.all([import('../rc/run-context.js'), spec.load()]);
    const ctx: CommandContext = { command: spec.name, options, env: io.env, signal: ac.signal, stdout: io.stdout, stderr: io.stderr };
    return exitCodeOf(await runCommand(ctx, spec.needs(options), body));
  } catch (err) {
    return reportError(err, io.stderr);
  } finally {
    for (const sig of INTERRUPTS) process.off(sig, onSignal);
  }
}

/** The signals that interrupt a run (no new work starts; what runs is brought to a safe state). */
export const INTERRUPTS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

// A write error of the console (EPIPE, EIO...): the console is gone, the run goes on.
function ignoreOutputError(): void {}

/** Write to a console stream; a stream that is gone (or throws) is not an error of the run. */
function safeWrite(stream: NodeJS.WritableStream, text: string): void {
  try {
    stream.write(text);
  } catch {
    /* the console is gone */
  }
}

function reportError(err: unknown, stderr: NodeJS.WritableStream): number {
  // yargs reports its own usage errors (missing option values...) as YError.
  if (err instanceof Error && err.name === 'YError') err = new UsageError(err.message);
  if (err instanceof UsageError) {
    safeWrite(stderr, `rc.libvirt: ${err.message}\n${USAGE}\nTry 'rc.libvirt --help' for the options.\n`);
    return EXIT.usage;
  }
  const code = exitCodeOfError(err);
  if (code !== undefined) {
    safeWrite(stderr, `rc.libvirt: ${(err as Error).message}\n`);
    return code;
  }
  const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
  safeWrite(stderr, `rc.libvirt: internal error: ${msg}\n`);
  return EXIT.failure;
}
