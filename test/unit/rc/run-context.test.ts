import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { CommandContext } from '../../../src/cli/context.js';
import { ConfigError, NotInstalledError, NotRootError } from '../../../src/cli/errors.js';
import { withRun } from '../../../src/rc/run-context.js';
import { statusExitCode, formatStatus, type Status } from '../../../src/rc/status.js';

function ctx(env: NodeJS.ProcessEnv = {}): CommandContext {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  return { command: 'start', options: { dryRun: false, json: false, verbosity: 0 }, env, signal: new AbortController().signal, stdout: sink, stderr: sink };
}
const noFile = async (): Promise<string> => {
  throw Object.assign(new Error('no file'), { code: 'ENOENT' });
};
const body = async (): Promise<number> => 0;

describe('withRun', () => {
  it('refuses to run without root where root is needed (exit 4)', async () => {
    const err = await withRun(ctx(), { root: true, programs: [], lock: false }, body, { readFile: noFile, isRoot: () => false, logger: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotRootError);
    expect((err as NotRootError).exitCode).toBe(4);
  });

  it('names every missing program (exit 5)', async () => {
    const err = await withRun(ctx({ VIRSH: '/nonexistent/virsh', LIBVIRTD: 'no-such-libvirtd' }), { root: false, programs: ['virsh', 'libvirtd'], lock: false }, body, {
      readFile: noFile,
      logger: false,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotInstalledError);
    expect((err as Error).message).toContain('virsh (/nonexistent/virsh)');
    expect((err as Error).message).toContain('libvirtd (no-such-libvirtd)');
    expect((err as NotInstalledError).exitCode).toBe(5);
  });

  it('checks the settings before anything else (exit 6)', async () => {
    const err = await withRun(ctx({ TIMEOUT: '-5' }), { root: true, programs: [], lock: false }, body, { readFile: noFile, isRoot: () => false, logger: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
  });

  it('runs the body with the settings', async () => {
    const code = await withRun(ctx({ TIMEOUT: '7' }), { root: false, programs: [], lock: false }, async (run) => run.settings.timeout, { readFile: noFile, logger: false });
    expect(code).toBe(7);
  });
});

describe('status', () => {
  const base: Status = {
    version: 1,
    daemons: [{ name: 'libvirtd', running: true, pid: 5, pidfile: '/p', problem: null, otherPids: [] }],
    libvirtd: { running: true, answering: true, error: null },
    guests: [{ uri: 'qemu:///system', id: 'u', name: 'web server', state: 'running', stateDetail: 'running (booted)', savedImage: true }],
    guestErrors: [],
    pending: [{ uri: 'qemu:///system', id: 'v', name: 'db', action: 'saved', stateBefore: 'running' }],
  };
  it('exits 0 when libvirtd answers, 1 when it runs without answering, 3 when it does not run', () => {
    expect(statusExitCode(base)).toBe(0);
    expect(statusExitCode({ ...base, libvirtd: { running: true, answering: false, error: 'x' } })).toBe(1);
    expect(statusExitCode({ ...base, libvirtd: { running: true, answering: null, error: 'not asked' } })).toBe(0);
    expect(statusExitCode({ ...base, libvirtd: { running: false, answering: null, error: null } })).toBe(3);
  });
  it('shows daemons, guests with saved images and pending guests', () => {
    const text = formatStatus(base);
    expect(text).toContain('libvirtd   running (pid 5)');
    expect(text).toContain('web server  running (booted)  (saved image)');
    expect(text).toContain('db  (saved; was running)');
  });
});
