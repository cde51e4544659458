// The usual command lines (`stop`, `-v plan`, `--config FILE stop`...) parsed
// without yargs, whose loading and setup cost every run tens of ms. Anything
// this does not know for sure (--help, --version, `--`, `--name=value` of a
// flag, a value that starts with `-`, an option given twice, an unknown word)
// returns undefined and goes through yargs, which decides and words every
// error. For what it takes, it gives what yargs gives (quick-args.test.ts
// compares the two over every short command line of a token pool).
import type { CliOptions } from '../config/cli-options.js';
import { COMMANDS } from './commands.js';
import { VALUE_OPTIONS, type CommandLine } from './command-line.js';

const NAMES = new Set(COMMANDS.map((c) => c.name));

/** The command line, when it has one of the usual shapes; undefined: ask yargs. */
export function quickParse(args: readonly string[]): CommandLine | undefined {
  const options: CliOptions = { dryRun: false, json: false, verbosity: 0 };
  const positional: string[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!arg.startsWith('-')) {
      if (!NAMES.has(arg)) return undefined;
      positional.push(arg);
    } else if (/^-v+$/.test(arg) || arg === '--verbose') {
      options.verbosity += arg === '--verbose' ? 1 : arg.length - 1;
    } else if (/^-q+$/.test(arg) || arg === '--quiet') {
      options.verbosity -= arg === '--quiet' ? 1 : arg.length - 1;
    } else if (arg === '--json' || arg === '--dry-run') {
      if (seen.has(arg)) return undefined;
      seen.add(arg);
      if (arg === '--json') options.json = true;
      else options.dryRun = true;
    } else {
      const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
      const name = m?.[1] as keyof typeof VALUE_OPTIONS | undefined;
      if (!m || !name || !Object.hasOwn(VALUE_OPTIONS, name)) return undefined;
      const value = m[2] ?? args[++i];
      if (value === undefined || value === '' || value.startsWith('-')) return undefined;
      const field = VALUE_OPTIONS[name];
      if (field === 'uri') {
        (options.uri ??= []).push(value);
      } else {
        if (seen.has(name)) return undefined;
        seen.add(name);
        options[field] = value;
      }
    }
  }
  return positional.length === 1 ? { positional, options } : undefined;
}
