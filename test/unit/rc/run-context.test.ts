import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exitCodeOf, exitCodeOfError } from '../../../src/cli/exit-codes.js';
import { ConfigError } from '../../../src/config/errors.js';
import { NotInstalledError, NotRootError } from '../../../src/rc/errors.js';
import type { Settings } from '../../../src/config/settings.js';
import { runCommand, withFaults, withRun, type CommandContext, type RunOutcome } from '../../../src/rc/run-context.js';
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
  it('names a qmp image older than its running guest instead of a saved image', () => {
    const text = formatStatus({ ...base, guests: [{ ...base.guests[0]!, staleImage: '/var/lib/rc-libvirt/qemu-save/web.save' }] });
    expect(text).toContain('web server  running (booted)  [/var/lib/rc-libvirt/qemu-save/web.save is older than the running guest: never restored]');
    expect(text).not.toContain('(saved image)');
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

describe('withRun at a command that runs at host shutdown (atShutdown)', () => {
  const FILE = '/etc/default/libvirt';
  const badFile = async (p: string): Promise<string> => {
    if (p !== FILE) throw Object.assign(new Error('no file'), { code: 'ENOENT' });
    return 'TIMEOUT=5m\nNO_SUCH_SETTING=1\nON_SHUTDOWN=hibernate\nnot a setting\nPARALLEL=2\n';
  };
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-run-context-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  // A quiet (-q) command context that keeps what it prints, and a `logger` that keeps what it is sent.
  function captured(env: NodeJS.ProcessEnv = {}): { ctx: CommandContext; out: () => string; err: () => string; logger: string; syslog: () => string } {
    let out = '';
    let err = '';
    const sink = (add: (s: string) => void) => new Writable({ write: (c, _e, cb) => (add(String(c)), cb()) });
    const logger = join(dir, 'logger');
    const syslog = join(dir, 'syslog');
    writeFileSync(logger, `#!/bin/sh\ncat >> '${syslog}'\n`);
    chmodSync(logger, 0o755);
    return {
      ctx: { command: 'stop', options: { dryRun: false, json: false, verbosity: -1 }, env, signal: new AbortController().signal, stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)) },
      out: () => out,
      err: () => err,
      logger,
      syslog: () => (existsSync(syslog) ? readFileSync(syslog, 'utf8') : ''),
    };
  }
  const ok = async (): Promise<RunOutcome> => 'ok';

  it('bad settings: the body runs with the defaults for them, every error is printed at -q and sent to syslog, exit 6 at the end', async () => {
    const c = captured();
    let seen: Settings | undefined;
    const outcome = await runCommand(c.ctx, { root: false, programs: [], lock: false, atShutdown: true }, async (run) => {
      seen = run.settings;
      return 'ok';
    }, { readFile: badFile, logger: c.logger });
    expect(outcome).toBe('done-bad-setting');
    expect(exitCodeOf(outcome)).toBe(6);
    expect(seen).toMatchObject({ timeout: 300, onShutdown: 'managedsave', parallel: 2, everyDriver: false });
    for (const where of [`${FILE}:1: TIMEOUT`, `${FILE}:2: NO_SUCH_SETTING`, `${FILE}:3: ON_SHUTDOWN`, `${FILE}:4: not a KEY=value line`]) {
      expect(c.err()).toContain(`error: ${where}`);
      expect(c.syslog()).toContain(`<27>${where}`); // daemon.err
    }
    expect(c.err()).toContain('stop: 4 errors in the settings (/etc/default/libvirt): stop goes on with the defaults for them (exit 6 at the end)');
    expect(c.err().trimEnd().split('\n').at(-1)).toBe('error: stop: the settings had 4 errors (see above); their defaults were used');
  });

  it('a bad DRIVER: says it acts on every guest found, and through which drivers', async () => {
    const c = captured({ DRIVER: 'libvrit' });
    let seen: Settings | undefined;
    await runCommand(c.ctx, { root: false, programs: [], lock: false, atShutdown: true }, async (run) => ((seen = run.settings), 'ok'), { readFile: noFile, logger: false });
    expect(seen?.everyDriver).toBe(true);
    expect(c.err()).toContain('DRIVER or URIS is bad: acting on every guest found: libvirt at qemu:///system, and QEMUs running from /run/rc-libvirt/qmp (qmp driver, definitions in /etc/qemu/guests)');
  });

  it('a clamped duration is a warning, exit 0', async () => {
    const c = captured({ TIMEOUT: '99999999' });
    const outcome = await runCommand(c.ctx, { root: false, programs: [], lock: false, atShutdown: true }, ok, { readFile: noFile, logger: false });
    expect(outcome).toBe('ok');
    expect(c.err()).toBe('warning: environment variable TIMEOUT: 99999999 s is above the maximum of 604800 s: 604800 s is used\n');
  });

  it('a missing program: the body runs, the program is named, exit 5 at the end', async () => {
    const c = captured({ VIRTLOCKD: '/nonexistent/virtlockd' });
    let ran = false;
    const outcome = await runCommand(c.ctx, { root: false, programs: ['virtlockd'], lock: false, atShutdown: true }, async () => ((ran = true), 'ok'), { readFile: noFile, logger: false });
    expect(ran).toBe(true);
    expect(outcome).toBe('done-program-missing');
    expect(exitCodeOf(outcome)).toBe(5);
    expect(c.err()).toContain('error: not installed or not executable: virtlockd (/nonexistent/virtlockd)');
    expect(c.err().trimEnd().split('\n').at(-1)).toBe('error: stop: ran without virtlockd (/nonexistent/virtlockd)');
  });

  it('a failure wins over both (exit 1), a bad setting over a missing program (exit 6)', async () => {
    const c = captured({ VIRTLOCKD: '/nonexistent/virtlockd', TIMEOUT: 'x' });
    const needs = { root: false, programs: ['virtlockd'] as const, lock: false, atShutdown: true };
    expect(await runCommand(c.ctx, needs, async () => 'failed', { readFile: noFile, logger: false })).toBe('failed');
    expect(await runCommand(c.ctx, needs, ok, { readFile: noFile, logger: false })).toBe('done-bad-setting');
    expect(withFaults('ok', { settings: [], programs: ['virsh (/x)'] })).toBe('done-program-missing');
    expect(withFaults('ok', { settings: [], programs: [] })).toBe('ok');
  });

  it('other commands refuse bad settings before anything, naming every error at once (exit 6), and missing programs (exit 5)', async () => {
    const c = captured({ VIRTLOCKD: '/nonexistent/virtlockd' });
    let ran = false;
    const body = async (): Promise<RunOutcome> => ((ran = true), 'ok');
    const err = await runCommand({ ...c.ctx, command: 'start' }, { root: false, programs: ['virtlockd'], lock: false }, body, { readFile: badFile, logger: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(exitCodeOfError(err)).toBe(6);
    for (const line of [1, 2, 3, 4]) expect((err as Error).message).toContain(`${FILE}:${line}: `);
    const err2 = await runCommand({ ...c.ctx, command: 'start' }, { root: false, programs: ['virtlockd'], lock: false }, body, { readFile: noFile, logger: false }).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(NotInstalledError);
    expect(ran).toBe(false);
  });
});
