// quick-args.ts against yargs: for every command line it takes, it gives what yargs gives
// (the same command words, the same options), and it leaves to yargs what it does not know.
import { describe, expect, it } from 'vitest';
import { quickParse } from '../../../src/cli/quick-args.js';
import { parseWithYargs } from '../../../src/cli/yargs-args.js';

// Words a command line may hold: commands, flags, options with their values, and shapes only yargs decides.
const POOL = [
  'stop', 'plan', 'guests_shutdown', 'bogus',
  '-v', '-vv', '-q', '--verbose', '--quiet', '--json', '--dry-run',
  '--config', '--config=/etc/x', '--uri', '--uri=qemu:///session', '--timeout', '--on-shutdown=shutdown', '--guests-dir',
  '/tmp/c', '60', 'true', '-5', '', 'a=b',
  '--', '--help', '-h', '--version', '--dryRun', '--no-json', '-vq', '--json=false', '--bogus',
];

// The words of the usual command lines.
const USUAL = ['-v', '-vv', '-q', '--verbose', '--quiet', '--json', '--dry-run', '--config', '/tmp/c', '--config=/etc/x', '--uri', 'qemu:///system', '--timeout', '60', '--on-shutdown=shutdown'];

// Every command line of one and two words, and a fixed sample of longer ones.
function commandLines(): string[][] {
  const lines: string[][] = [[]];
  for (const a of POOL) {
    lines.push([a]);
    for (const b of POOL) lines.push([a, b]);
  }
  let seed = 15;
  const pick = (from: readonly string[]): string => from[(seed = (seed * 1103515245 + 12345) % 2 ** 31) % from.length] as string;
  // Longer ones: from the whole pool, and from the usual words only (each with a command among them).
  for (let i = 0; i < 1000; i++) lines.push(Array.from({ length: 3 + (i % 3) }, () => pick(POOL)));
  for (let i = 0; i < 1000; i++) {
    const words = Array.from({ length: 2 + (i % 4) }, () => pick(USUAL));
    words.splice(i % (words.length + 1), 0, pick(['stop', 'plan']));
    lines.push(words);
  }
  return lines;
}

describe('quickParse', () => {
  it('gives what yargs gives for every command line it takes', async () => {
    let taken = 0;
    for (const args of commandLines()) {
      const quick = quickParse(args);
      if (!quick) continue;
      taken++;
      const viaYargs = await parseWithYargs(args).catch((err: unknown) => ({ error: String(err) }));
      expect({ args, parsed: viaYargs }).toEqual({ args, parsed: quick });
    }
    // Not vacuous: it takes a good part of them.
    expect(taken).toBeGreaterThan(250);
  }, 120_000);

  it('takes the usual command lines', () => {
    expect(quickParse(['stop'])).toEqual({ positional: ['stop'], options: { dryRun: false, json: false, verbosity: 0 } });
    expect(quickParse(['-v', 'plan', '--json'])).toEqual({ positional: ['plan'], options: { dryRun: false, json: true, verbosity: 1 } });
    expect(quickParse(['--config', '/etc/x', '--uri', 'qemu:///system', '--uri=qemu:///session', 'start'])).toEqual({
      positional: ['start'],
      options: { dryRun: false, json: false, verbosity: 0, config: '/etc/x', uri: ['qemu:///system', 'qemu:///session'] },
    });
  });

  it('leaves to yargs help, version, errors and every spelling it does not know', () => {
    for (const args of [[], ['--help'], ['stop', '--version'], ['bogus'], ['stop', 'plan'], ['--config'], ['--config', '-v', 'stop'], ['--config=', 'stop'],
      ['--json', '--json', 'stop'], ['--config', 'a', '--config', 'b', 'stop'], ['--', 'stop'], ['--dryRun', 'stop'], ['-vq', 'stop'], ['--no-json', 'stop']]) {
      expect(quickParse(args), JSON.stringify(args)).toBeUndefined();
    }
  });
});
