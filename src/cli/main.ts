// The rc.libvirt entry point: parses the command line, runs one command,
// prints errors and sets the exit code. The only place that does either.
import yargs from 'yargs';
import { COMMANDS } from './commands.js';
import type { CliOptions } from '../config/cli-options.js';
import { runCommand, type CommandContext } from '../rc/run-context.js';
import { UsageError } from './errors.js';
import { EXIT, exitCodeOf, exitCodeOfError } from './exit-codes.js';
import { VERSION } from '../version.js';
import { runController } from '../util/deadline.js';

const USAGE = `Usage: rc.libvirt [options] COMMAND\n\nCOMMAND: ${COMMANDS.map((c) => c.name).join(' | ')}`;

// The --help text rendered at build time by scripts/bundle.mjs (100 columns): yargs' layout takes
// tens of ms at run time. Undefined outside the bundle.
declare const __RCL_HELP__: string | undefined;

/** The part of yargs' internals (yargs 18) that main() touches. */
interface YargsInternals {
  getInternalMethods(): { getUsageInstance(): { cacheHelpMessage: () => void } };
}

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
  let parsed: Record<string, unknown>;
  let helpShown = false;
  try {
    const parser = yargs(args)
      .scriptName('rc.libvirt')
      .usage(USAGE)
      .version(VERSION)
      .help('help')
      .alias('h', 'help')
      .option('config', { type: 'string', describe: 'settings file (default /etc/default/libvirt)', requiresArg: true })
      .option('timeout', { type: 'string', describe: 'seconds before still-active guests are destroyed (default 300)', requiresArg: true })
      .option('parallel', { type: 'string', describe: 'guests handled at once; 0 = all (default 0)', requiresArg: true })
      .option('on-shutdown', { type: 'string', describe: 'managedsave | shutdown | destroy: what stop does to a guest (default managedsave)', requiresArg: true })
      .option('on-boot', { type: 'string', describe: 'restore | ignore: what start does with the guests stop handled (default restore)', requiresArg: true })
      .option('start-delay', { type: 'string', describe: 'seconds between guest starts at boot (default 0)', requiresArg: true })
      .option('driver', { type: 'string', describe: 'libvirt (virsh) | qmp (QEMU directly, no libvirt daemons) (default libvirt)', requiresArg: true })
      .option('uri', { type: 'string', array: true, nargs: 1, describe: 'libvirt connection to act on (repeatable; default qemu:///system)', requiresArg: true })
      .option('guests-dir', { type: 'string', describe: 'qmp driver: guest definitions (default /etc/qemu/guests)', requiresArg: true })
      .option('dry-run', { type: 'boolean', default: false, describe: 'print the actions, change nothing' })
      .option('json', { type: 'boolean', default: false, describe: 'machine-readable output (status, plan)' })
      .option('quiet', { alias: 'q', type: 'count', describe: 'quieter' })
      .option('verbose', { alias: 'v', type: 'count', describe: 'more detail' })
      .strictOptions()
      .wrap(Math.min(100, process.stdout.columns ?? 100))
      .exitProcess(false)
      .fail((msg, err) => {
        throw err ?? new UsageError(msg);
      })
      .epilogue('Exit codes: 0 done cleanly, 1 a failure or a guest had to be destroyed, 2 bad usage, 3 status: not running, 4 not root, 5 a program is missing, 6 bad configuration.');
    for (const c of COMMANDS) parser.command(c.name, c.describe);
    parser.showHelpOnFail(false);
    // yargs lays out the whole help text before it runs a command, in case the
    // command shows it later (about 15 ms of every run); ours never does, and
    // --help still renders it when asked.
    (parser as unknown as YargsInternals).getInternalMethods().getUsageInstance().cacheHelpMessage = () => undefined;
    const out: string[] = [];
    parsed = await parser.parseAsync(args, {}, (err, _argv, output) => {
      if (!err && output) {
        helpShown = true;
        out.push(output);
      }
    });
    if (helpShown) {
      io.stdout.write(`${out.join('\n')}\n`);
      return EXIT.ok;
    }
  } catch (err) {
    return reportError(err, io.stderr);
  }
  const positional = (parsed._ as unknown[]).map(String);
  const name = positional[0];
  const spec = COMMANDS.find((c) => c.name === name);
  if (!spec || positional.length !== 1) {
    const what = name === undefined ? 'no command given' : positional.length > 1 ? `one command at a time, got: ${positional.join(' ')}` : `unknown command: ${name}`;
    return reportError(new UsageError(what), io.stderr);
  }
  const options: CliOptions = {
    dryRun: parsed['dry-run'] === true,
    json: parsed.json === true,
    verbosity: Number(parsed.verbose ?? 0) - Number(parsed.quiet ?? 0),
  };
  const str = (k: string): string | undefined => (typeof parsed[k] === 'string' ? (parsed[k] as string) : undefined);
  const set = <K extends keyof CliOptions>(key: K, value: CliOptions[K] | undefined): void => {
    if (value !== undefined) options[key] = value;
  };
  set('config', str('config'));
  set('timeout', str('timeout'));
  set('parallel', str('parallel'));
  set('onShutdown', str('on-shutdown'));
  set('onBoot', str('on-boot'));
  set('startDelay', str('start-delay'));
  set('driver', str('driver'));
  set('guestsDir', str('guests-dir'));
  if (Array.isArray(parsed.uri)) set('uri', (parsed.uri as unknown[]).map(String));

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
    const body = await spec.load();
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
