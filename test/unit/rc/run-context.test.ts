import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { exitCodeOf, exitCodeOfError } from '../../../src/cli/exit-codes.js';
import { ConfigError } from '../../../src/config/errors.js';
import { NotInstalledError, NotRootError } from '../../../src/rc/errors.js';
import { withRun, type CommandContext } from '../../../src/rc/run-context.js';
import { statusOutcome, formatStatus, type Status } from '../../../src/rc/status.js';

// The exit code of a status, as the CLI chooses it from the outcome rc returns.
const statusExitCode = (s: Status): number => exitCodeOf(statusOutcome(s));

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
    expect(exitCodeOfError(err)).toBe(4);
  });

  it('names every missing program (exit 5)', async () => {
    const err = await withRun(ctx({ VIRSH: '/nonexistent/virsh', LIBVIRTD: 'no-such-libvirtd' }), { root: false, programs: ['virsh', 'libvirtd'], lock: false }, body, {
      readFile: noFile,
      logger: false,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotInstalledError);
    expect((err as Error).message).toContain('virsh (/nonexistent/virsh)');
    expect((err as Error).message).toContain('libvirtd (no-such-libvirtd)');
    expect(exitCodeOfError(err)).toBe(5);
  });

  it('checks the settings before anything else (exit 6)', async () => {
    const err = await withRun(ctx({ TIMEOUT: '-5' }), { root: true, programs: [], lock: false }, body, { readFile: noFile, isRoot: () => false, logger: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
  });

  it('a planted lock symlink is reported as an error and makes a clean run exit 1; the body still runs', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'rcl-runctx-'));
    try {
      const decoy = join(runDir, 'decoy');
      writeFileSync(decoy, 'keep\n');
      symlinkSync(decoy, join(runDir, 'rc.libvirt.lock'));
      const errors: string[] = [];
      const c = { ...ctx({ RC_LIBVIRT_RUN_DIR: runDir }), command: 'guests_shutdown' };
      c.stderr = new Writable({ write: (chunk: Buffer, _e, cb) => void (errors.push(chunk.toString()), cb()) });
      let ran = false;
      const outcome = await withRun(c, { root: false, programs: [], lock: true }, async () => ((ran = true), 'ok' as const), { readFile: noFile, logger: false });
      expect(ran).toBe(true);
      expect(outcome).toBe('failed');
      expect(exitCodeOf(outcome)).toBe(1);
      expect(errors.join('')).toContain('was a symlink');
      expect(readFileSync(decoy, 'utf8')).toBe('keep\n');
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('runs the body with the settings', async () => {
    const code = await withRun(ctx({ TIMEOUT: '7' }), { root: false, programs: [], lock: false }, async (run) => run.settings.timeout, { readFile: noFile, logger: false });
    expect(code).toBe(7);
  });
});

describe('status', () => {
  const base: Status = {
    version: 1,
    driver: 'libvirt',
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
  it('says why the guests are not listed when libvirtd does not run or does not answer', () => {
    const down = formatStatus({ ...base, daemons: [{ ...base.daemons[0]!, running: false, pid: null }], libvirtd: { running: false, answering: null, error: null }, guests: [] });
    expect(down).toContain('libvirtd   stopped');
    expect(down).toContain('guests: not listed (libvirtd is not running)');
    expect(down).toContain('waiting to be restored at the next start:');
    expect(formatStatus({ ...base, libvirtd: { running: true, answering: false, error: 'timed out' }, guests: [] })).toContain('guests: not listed (libvirtd does not answer)');
    expect(formatStatus(base)).not.toContain('not listed');
  });

  describe('with DRIVER=qmp', () => {
    const qmp: Status = {
      version: 1,
      driver: 'qmp',
      qmp: { guestsDir: '/etc/qemu/guests', exists: true },
      daemons: [],
      libvirtd: null,
      guests: [
        { uri: 'qmp:///etc/qemu/guests', id: 'web', name: 'web', state: 'running', stateDetail: 'running', savedImage: false },
        { uri: 'qmp:///etc/qemu/guests', id: 'db', name: 'db', state: 'shutoff', stateDetail: 'shut off', savedImage: true },
      ],
      guestErrors: [],
      pending: [{ uri: 'qmp:///etc/qemu/guests', id: 'db', name: 'db', action: 'saved', stateBefore: 'running' }],
    };
    const shutoff = qmp.guests.map((g) => ({ ...g, state: 'shutoff' as const }));
    it('exits 0 when a guest runs or is paused, 3 when none does, 1 when the guests cannot be listed', () => {
      expect(statusExitCode(qmp)).toBe(0);
      expect(statusExitCode({ ...qmp, guests: [{ ...shutoff[0]!, state: 'paused' }] })).toBe(0);
      expect(statusExitCode({ ...qmp, guests: shutoff })).toBe(3);
      expect(statusExitCode({ ...qmp, guests: [] })).toBe(3);
      expect(statusExitCode({ ...qmp, guests: [], guestErrors: ['qmp:///etc/qemu/guests: EACCES'] })).toBe(1);
      // A journal that cannot be read is reported, but does not make "no guest runs" a failure.
      expect(statusExitCode({ ...qmp, guests: shutoff, guestErrors: ['guests waiting to be restored: damaged'] })).toBe(3);
    });
    it('shows the qmp guests and the pending ones, and says the libvirt daemons are not used', () => {
      const text = formatStatus(qmp);
      expect(text).toContain('driver qmp: guests run under QEMU directly, defined in /etc/qemu/guests; the libvirt daemons are not used');
      expect(text).not.toMatch(/libvirtd +(running|stopped)/);
      expect(text).toContain('  web  running\n');
      expect(text).toContain('  db  shut off  (saved image)');
      expect(text).toContain('waiting to be restored at the next start:\n  db  (saved; was running)');
    });
    it('names a guests directory that does not exist (a typo in QEMU_GUESTS_DIR looks like "no guests" otherwise)', () => {
      expect(formatStatus({ ...qmp, qmp: { guestsDir: '/etc/qemu/guest', exists: false }, guests: [] })).toContain('guests: none (/etc/qemu/guest is not a directory)');
      expect(formatStatus({ ...qmp, guests: [] })).toContain('guests: none\n');
    });
  });
});
