import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { main } from '../../../src/cli/main.js';
import { COMMANDS } from '../../../src/cli/commands.js';
import { VERSION } from '../../../src/version.js';

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  }) as Writable & { text: () => string };
  w.text = () => chunks.join('');
  return w;
}

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = sink();
  const stderr = sink();
  const code = await main(args, { env: {}, stdout, stderr });
  return { code, out: stdout.text(), err: stderr.text() };
}

describe('rc.libvirt command line', () => {
  it('lists every command of the contract in --help and exits 0', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    for (const name of ['start', 'stop', 'restart', 'soft_restart', 'shutdown', 'status', 'guests_shutdown', 'guests_reboot', 'plan']) {
      expect(r.out).toContain(`rc.libvirt ${name}`);
    }
    expect(COMMANDS.map((c) => c.name)).toHaveLength(9);
  });

  it('prints the package version', async () => {
    const r = await run(['--version']);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(VERSION);
  });

  it('exits 2 with the usage on an unknown command (the original exits 0)', async () => {
    const r = await run(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('unknown command: frobnicate');
    expect(r.err).toContain('Usage: rc.libvirt');
  });

  it('exits 2 without a command, with two commands, and with an option missing its value', async () => {
    expect((await run([])).code).toBe(2);
    const two = await run(['start', 'stop']);
    expect(two.code).toBe(2);
    expect(two.err).toContain('one command at a time');
    const missing = await run(['stop', '--timeout']);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('timeout');
  });

  it('--uri takes one value each time: the command after it is still the command', async () => {
    const one = await run(['--uri', 'qemu:///x', 'frobnicate']);
    expect(one.code).toBe(2);
    expect(one.err).toContain('unknown command: frobnicate');
    const two = await run(['--uri', 'qemu:///x', '--uri', 'qemu:///y', 'start', 'stop']);
    expect(two.err).toContain('one command at a time, got: start stop');
  });

  it('exits 2 on an unknown option', async () => {
    const r = await run(['--frob', 'status']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/frob/);
  });

  it('a stdout and stderr that fail every write (EPIPE, EIO) do not end the run: it gets to its own exit code', async () => {
    const failing = (code: string): Writable =>
      new Writable({
        write(_chunk: Buffer, _enc, cb): void {
          cb(Object.assign(new Error(`write ${code}`), { code }));
        },
      });
    const stdout = failing('EPIPE');
    const stderr = failing('EIO');
    expect(await main(['--version'], { env: {}, stdout, stderr })).toBe(0);
    expect(await main(['frobnicate'], { env: {}, stdout, stderr })).toBe(2);
    // The writes did fail (and the errors were handled).
    await new Promise((r) => setImmediate(r));
    expect((stdout.errored as NodeJS.ErrnoException | null)?.code).toBe('EPIPE');
    expect((stderr.errored as NodeJS.ErrnoException | null)?.code).toBe('EIO');
  });
});
