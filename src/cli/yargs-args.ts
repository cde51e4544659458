// The command line through yargs: --help, --version, every option spelling and
// every usage error. Loaded only when quick-args.ts does not take the command line.
import yargs from 'yargs';
import type { CliOptions } from '../config/cli-options.js';
import { VERSION } from '../version.js';
import { COMMANDS } from './commands.js';
import { USAGE, VALUE_OPTIONS, type CommandLine } from './command-line.js';
import { UsageError } from './errors.js';

/** The part of yargs' internals (yargs 18) that parseWithYargs() touches. */
interface YargsInternals {
  getInternalMethods(): { getUsageInstance(): { cacheHelpMessage: () => void } };
}

/** Parse `args` with yargs: the command line, or the text --help or --version prints. Throws UsageError (or yargs' YError). */
export async function parseWithYargs(args: string[]): Promise<CommandLine | { output: string }> {
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
  const parsed = await parser.parseAsync(args, {}, (err, _argv, output) => {
    if (!err && output) out.push(output);
  });
  if (out.length > 0) return { output: out.join('\n') };
  const options: CliOptions = {
    dryRun: parsed['dry-run'] === true,
    json: parsed.json === true,
    verbosity: Number(parsed.verbose ?? 0) - Number(parsed.quiet ?? 0),
  };
  for (const [name, field] of Object.entries(VALUE_OPTIONS)) {
    const value: unknown = parsed[name];
    if (field === 'uri') {
      if (Array.isArray(value)) options.uri = value.map(String);
    } else if (typeof value === 'string') {
      options[field] = value;
    }
  }
  return { positional: parsed._.map(String), options };
}
