// What the command line says, whoever parsed it: the words that are not
// options (the command), and the options. quick-args.ts parses the usual
// shapes itself; everything else goes through yargs (yargs-args.ts).
import type { CliOptions } from '../config/cli-options.js';
import { COMMANDS } from './commands.js';

/** A parsed command line: the positional words and the options. */
export interface CommandLine {
  positional: string[];
  options: CliOptions;
}

/** The usage lines every usage error repeats. */
export const USAGE = `Usage: rc.libvirt [options] COMMAND\n\nCOMMAND: ${COMMANDS.map((c) => c.name).join(' | ')}`;

/** The options that take a value (`--name VALUE`), by their CliOptions field; `uri` is repeatable. */
export const VALUE_OPTIONS = {
  config: 'config',
  timeout: 'timeout',
  parallel: 'parallel',
  'on-shutdown': 'onShutdown',
  'on-boot': 'onBoot',
  'start-delay': 'startDelay',
  driver: 'driver',
  uri: 'uri',
  'guests-dir': 'guestsDir',
} as const satisfies Record<string, keyof CliOptions>;
