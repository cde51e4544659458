// rc.libvirt's daemon side on the real virtlockd, virtlogd and libvirtd:
// start from nothing and from half-up states, stale and foreign pidfiles,
// stop twice, soft_restart under a running guest, status, two runs at once.
// Holds the host-wide libvirtd lock for the whole file; stops what it started by pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/commands.js';
import { exitCodeOf } from '../../src/cli/exit-codes.js';
import { main } from '../../src/cli/main.js';
import { daemonCommand, type DaemonCommand, type GuestSteps } from '../../src/rc/daemon-commands.js';
import { withRun, type CommandContext } from '../../src/rc/run-context.js';
import { FLOCK } from '../../src/rc/run-lock.js';
import type { Status } from '../../src/rc/status.js';
import { holdLibvirtLock, recordTestDaemons, releaseLibvirtLock } from '../helpers/daemons.js';
import { defineLibvirtGuest, libvirtGuestPid, removeLibvirtGuests } from '../helpers/libvirt-guest.js';
import { findPidsByComm, identifyPid, isPidAlive, makeTempDir, runCommand, terminateProcess, waitFor, type ProcessIdentity } from '../helpers/process.js';
import { repoRoot, requireTestbed } from '../helpers/testbed.js';
import { domainState, runVirsh } from '../helpers/virsh.js';

const DAEMONS = ['virtlockd', 'virtlogd', 'libvirtd'] as const;
type Name = (typeof DAEMONS)[number];
const pidfile = (n: Name): string => `/var/run/libvirt/${n}.pid`;

// Guest steps that find no guests: this file tests the daemon side (guest steps have their own tests).
const noGuests: GuestSteps = {
  stopGuests: async () => ({ clean: true, destroyed: [], failed: [] }),
  startGuests: async () => ({ clean: true, destroyed: [], failed: [] }),
};
// Guest steps that act on guests for a while, as the real stop does: it says when its actions begin.
const actingGuests: GuestSteps = {
  ...noGuests,
  stopGuests: async (_run, _mode, deps) => {
    deps?.acting?.();
    await new Promise((resolve) => setTimeout(resolve, 500));
    return { clean: true, destroyed: [], failed: [] };
  },
};

let dir: string;
let configPath: string;
let env: NodeJS.ProcessEnv;
// Every daemon process rc.libvirt started in this file, so afterAll can stop them by identity.
const seen = new Map<number, { name: Name; id: ProcessIdentity }>();
const ownChildren: ChildProcess[] = [];
// Daemons the test itself started outside rc.libvirt.
const strays: ProcessIdentity[] = [];

function sink(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  });
  return { stream, text: () => text };
}

function runningPid(n: Name): number | undefined {
  try {
    const pid = Number(readFileSync(pidfile(n), 'utf8').trim());
    return Number.isInteger(pid) && isPidAlive(pid) && findPidsByComm(n).includes(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function remember(): void {
  for (const n of DAEMONS) {
    const pid = runningPid(n);
    const id = pid === undefined ? undefined : identifyPid(pid);
    if (id) seen.set(id.pid, { name: n, id });
  }
  recordTestDaemons([...seen.values()]);
}

// One rc.libvirt daemon command, in this process, with the no-guests steps.
async function rc(which: DaemonCommand, extraEnv: NodeJS.ProcessEnv = {}, steps: GuestSteps = noGuests): Promise<{ code: number; out: string }> {
  const out = sink();
  const ctx: CommandContext = {
    command: which,
    options: { dryRun: false, json: false, verbosity: 0 },
    env: { ...env, ...extraEnv },
    signal: new AbortController().signal,
    stdout: out.stream,
    stderr: out.stream,
  };
  try {
    const needs = COMMANDS.find((c) => c.name === which)!.needs(ctx.options);
    const code = exitCodeOf(await withRun(ctx, needs, (run) => daemonCommand(run, which, steps), { logger: false }));
    return { code, out: out.text() };
  } finally {
    remember();
  }
}

// The real command line in this process (status, config errors).
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const o = sink();
  const e = sink();
  const code = await main(args, { env, stdout: o.stream, stderr: e.stream });
  return { code, stdout: o.text(), stderr: e.text() };
}

// Whether nobody holds the run lock: flock(1) gets it at once.
function lockIsFree(): boolean {
  return spawnSync(FLOCK, ['--exclusive', '--nonblock', join(dir, 'run', 'rc.libvirt.lock'), 'true']).status === 0;
}

function startOwnSleep(): ChildProcess {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  ownChildren.push(child);
  return child;
}

describe('rc.libvirt daemons on the real libvirt', () => {
  beforeAll(async () => {
    requireTestbed();
    await holdLibvirtLock();
    // Daemons someone else started (outside the lock) are not ours to stop: wait for them to go.
    await waitFor('libvirt daemons started by others to stop', () => DAEMONS.every((n) => findPidsByComm(n).length === 0), {
      timeoutMs: 5 * 60_000,
      intervalMs: 1000,
    }).catch((err: Error) => {
      throw new Error(`${err.message}: running: ${DAEMONS.map((n) => `${n} ${findPidsByComm(n).join(',')}`).join('; ')}`);
    });
    for (const n of DAEMONS) rmSync(pidfile(n), { force: true });
    dir = await makeTempDir('rcl-daemons-');
    configPath = join(dir, 'libvirt.conf');
    writeFileSync(
      configPath,
      [
        '# rc.libvirt settings for this test file',
        `RC_LIBVIRT_RUN_DIR=${dir}/run`,
        `RC_LIBVIRT_STATE_DIR=${dir}/state`,
        'VIRTUSER=root',
        'VIRTGROUP=root',
        'MODULES=""',
        'DAEMON_TIMEOUT=60',
      ].join('\n'),
    );
    env = { ...process.env, RC_LIBVIRT_CONFIG: configPath, LC_ALL: 'C' };
  }, 10 * 60_000);

  afterAll(async () => {
    try {
      await removeLibvirtGuests();
    } finally {
      try {
        await rc('stop');
      } finally {
        for (const id of [...[...seen.values()].map((d) => d.id), ...strays].reverse()) await terminateProcess(id, 20_000);
        for (const c of ownChildren) if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
        releaseLibvirtLock();
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    }
  }, 5 * 60_000);

  it('starts all three from nothing and returns only when virsh answers', async () => {
    expect(DAEMONS.map(runningPid)).toEqual([undefined, undefined, undefined]);
    const r = await rc('start');
    expect(r.out).toContain('libvirtd answers');
    expect(r.code).toBe(0);
    // At once, no retry: start returned only after libvirtd answered.
    const list = await runVirsh(['list', '--all']);
    expect(list.code).toBe(0);
    for (const n of DAEMONS) expect(runningPid(n)).toBeGreaterThan(0);
    expect(existsSync(join(dir, 'run'))).toBe(true);
  });

  it('says what runs and changes nothing when started twice', async () => {
    const before = DAEMONS.map(runningPid);
    const r = await rc('start');
    expect(r.code).toBe(0);
    for (const n of DAEMONS) expect(r.out).toContain(`${n} is already running`);
    expect(DAEMONS.map(runningPid)).toEqual(before);
  });

  it('status exits 0 and gives the pids as JSON', async () => {
    const r = await cli(['status', '--json']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout) as Status;
    expect(s.version).toBe(1);
    expect(s.daemons.map((d) => [d.name, d.running, d.pid])).toEqual(DAEMONS.map((n) => [n, true, runningPid(n)]));
    expect(s.libvirtd).toEqual({ running: true, answering: true, error: null });
    const text = await cli(['status']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/libvirtd\s+running \(pid \d+\)/);
  });

  it('soft_restart keeps a running guest running and virtlockd/virtlogd on their pids', async () => {
    const guest = await defineLibvirtGuest({ name: 'rcl daemons soft restart', memMiB: 128 });
    const qemuPid = libvirtGuestPid(guest);
    expect(qemuPid).toBeGreaterThan(0);
    const [lockd, logd, libvirtd] = DAEMONS.map(runningPid);
    const r = await rc('soft_restart');
    expect(r.code).toBe(0);
    expect(r.out).toContain('virtlockd re-executed');
    expect(runningPid('virtlockd')).toBe(lockd);
    expect(runningPid('virtlogd')).toBe(logd);
    const newLibvirtd = runningPid('libvirtd');
    expect(newLibvirtd).toBeGreaterThan(0);
    expect(newLibvirtd).not.toBe(libvirtd);
    expect(await domainState(guest.uuid)).toBe('running');
    expect(libvirtGuestPid(guest)).toBe(qemuPid);
    expect(isPidAlive(qemuPid as number)).toBe(true);
    const status = JSON.parse((await cli(['status', '--json'])).stdout) as Status;
    expect(status.guests.find((g) => g.id === guest.uuid)).toMatchObject({ name: guest.name, state: 'running', savedImage: false });
    await removeLibvirtGuests();
  });

  // A network over a host bridge: libvirt starts it without dnsmasq, iptables or the bridge itself.
  async function createNetwork(name: string): Promise<void> {
    const netXml = join(dir, 'net.xml');
    writeFileSync(netXml, `<network><name>${name}</name><forward mode='bridge'/><bridge name='rcltest0'/></network>\n`);
    const created = await runVirsh(['net-create', `--file=${netXml}`]);
    expect(created.code, created.stderr).toBe(0);
  }

  it('stops the networks it could not list while the guests were handled (the guest step never acted)', async () => {
    await createNetwork('rcl daemons net0');
    const r = await rc('stop');
    expect(r.code).toBe(0);
    expect(r.out).toContain('network rcl daemons net0 stopped');
    expect(r.out.indexOf('network rcl daemons net0 stopped')).toBeLessThan(r.out.indexOf('libvirtd stopped'));
    expect(DAEMONS.map(runningPid)).toEqual([undefined, undefined, undefined]);
    expect((await rc('start')).code).toBe(0);
  });

  it('stops the active networks (listed while the guests were handled), then libvirtd, then virtlogd and virtlockd, and a second stop finds nothing to do', async () => {
    await createNetwork('rcl daemons net');
    const pids = DAEMONS.map(runningPid) as number[];
    const r = await rc('stop', {}, actingGuests);
    expect(r.code).toBe(0);
    expect(r.out).toContain('network rcl daemons net stopped');
    expect(r.out.indexOf('network rcl daemons net stopped')).toBeLessThan(r.out.indexOf('libvirtd stopped'));
    expect(r.out.indexOf('libvirtd stopped')).toBeLessThan(r.out.indexOf('virtlockd stopped'));
    expect(r.out.indexOf('libvirtd stopped')).toBeLessThan(r.out.indexOf('virtlogd stopped'));
    for (const pid of pids) expect(isPidAlive(pid)).toBe(false);
    for (const n of DAEMONS) expect(existsSync(pidfile(n))).toBe(false);
    const again = await rc('stop');
    expect(again.code).toBe(0);
    for (const n of DAEMONS) expect(again.out).toContain(`${n} is not running`);
  });

  it('status exits 3 when libvirtd does not run', async () => {
    const r = await cli(['status', '--json']);
    expect(r.code).toBe(3);
    const s = JSON.parse(r.stdout) as Status;
    expect(s.libvirtd?.running).toBe(false);
    expect(s.daemons.every((d) => !d.running && d.pid === null)).toBe(true);
  });

  it('starts the rest when only virtlockd runs (the original gave up here)', async () => {
    const started = await runCommand('/usr/sbin/virtlockd', ['-d', '-f', '/etc/libvirt/virtlockd.conf', '-p', pidfile('virtlockd')], { timeoutMs: 30_000 });
    expect(started.code).toBe(0);
    const lockd = await waitFor('virtlockd to run', () => runningPid('virtlockd'), { timeoutMs: 30_000 });
    remember();
    const r = await rc('start');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`virtlockd is already running (pid ${lockd})`);
    expect(runningPid('virtlockd')).toBe(lockd);
    expect(runningPid('virtlogd')).toBeGreaterThan(0);
    expect(runningPid('libvirtd')).toBeGreaterThan(0);
  });

  it('sends SIGKILL, with a warning, only to a daemon that outlives the deadline after SIGTERM', async () => {
    expect((await rc('start')).code).toBe(0);
    const lockd = runningPid('virtlockd') as number;
    process.kill(lockd, 'SIGSTOP'); // a stopped process does not act on SIGTERM
    const r = await rc('stop', { DAEMON_TIMEOUT: '3' });
    expect(r.out).toContain('libvirtd stopped');
    expect(r.out).toContain('virtlogd stopped');
    expect(r.out).toContain(`warning: virtlockd (pid ${lockd}) did not exit within 3.0 s of SIGTERM: sending SIGKILL`);
    expect(r.out).toContain(`virtlockd killed (pid ${lockd})`);
    expect(r.code).toBe(0);
    expect(isPidAlive(lockd)).toBe(false);
    expect(existsSync(pidfile('virtlockd'))).toBe(false);
    expect((await rc('start')).code).toBe(0);
  });

  it('stops virtlogd and virtlockd when libvirtd is already gone', async () => {
    const libvirtd = runningPid('libvirtd') as number;
    await terminateProcess(identifyPid(libvirtd) as ProcessIdentity, 30_000);
    const r = await rc('stop');
    expect(r.code).toBe(0);
    expect(r.out).toContain('libvirtd is not running');
    expect(r.out).toContain('virtlogd stopped');
    expect(r.out).toContain('virtlockd stopped');
    expect(DAEMONS.map(runningPid)).toEqual([undefined, undefined, undefined]);
  });

  it('is not blocked by a stale pidfile, and removes it', async () => {
    const dead = spawn('true');
    await new Promise((resolve) => dead.on('exit', resolve));
    await waitFor('the exited process to be reaped', () => !isPidAlive(dead.pid as number), { timeoutMs: 10_000 });
    writeFileSync(pidfile('libvirtd'), `${dead.pid}\n`);
    const r = await rc('start');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`names pid ${dead.pid}, which no longer runs (stale pidfile); removed it`);
    expect(runningPid('libvirtd')).toBeGreaterThan(0);
    expect((await rc('stop')).code).toBe(0);
  });

  it('never touches an unrelated process a pidfile names', async () => {
    const sleeper = startOwnSleep();
    await waitFor('sleep to run', () => isPidAlive(sleeper.pid as number), { timeoutMs: 10_000 });
    writeFileSync(pidfile('virtlogd'), `${sleeper.pid}\n`);
    writeFileSync(pidfile('libvirtd'), `${sleeper.pid}\n`);
    const stop = await rc('stop');
    expect(stop.code).toBe(0);
    expect(stop.out).toContain(`pid ${sleeper.pid}, which is sleep, not libvirtd: that process is left alone`);
    expect(isPidAlive(sleeper.pid as number)).toBe(true);
    writeFileSync(pidfile('virtlogd'), `${sleeper.pid}\n`);
    const start = await rc('start');
    expect(start.code).toBe(0);
    expect(start.out).toContain(`pid ${sleeper.pid}, which is sleep, not virtlogd`);
    expect(isPidAlive(sleeper.pid as number)).toBe(true);
    expect(runningPid('virtlogd')).toBeGreaterThan(0);
    expect(runningPid('virtlogd')).not.toBe(sleeper.pid);
    sleeper.kill('SIGKILL');
  });

  it('runs one at a time: a second run waits for the first', async () => {
    const bin = join(repoRoot, 'dist', 'rc.libvirt');
    expect(existsSync(bin)).toBe(true);
    // The first run is held still (SIGSTOP) once the lock file names it, so the second starts while it holds the lock.
    let first: ChildProcess | undefined;
    const runA = runCommand(process.execPath, [bin, 'soft_restart'], { timeoutMs: 170_000, env, onSpawn: (c) => (first = c) });
    const holder = (): number | undefined => {
      try {
        return Number(readFileSync(join(dir, 'run', 'rc.libvirt.lock'), 'utf8').split(' ')[0]);
      } catch {
        return undefined; // not created yet
      }
    };
    await waitFor('the first run to hold the lock', () => first?.pid !== undefined && holder() === first.pid, { timeoutMs: 60_000, intervalMs: 20 });
    const a0 = first as ChildProcess;
    expect(a0.kill('SIGSTOP')).toBe(true);
    let bOut = '';
    let runB: Promise<Awaited<typeof runA>>;
    try {
      runB = runCommand(process.execPath, [bin, 'soft_restart'], { timeoutMs: 170_000, env, onStdout: (d) => (bOut += d) });
      await waitFor('the second run to wait for the first', () => bOut.includes('waiting up to'), { timeoutMs: 60_000, intervalMs: 20 });
    } finally {
      a0.kill('SIGCONT');
    }
    const [a, b] = await Promise.all([runA, runB]);
    remember();
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(a.stdout).not.toContain('waiting up to');
    expect(b.stdout).toMatch(new RegExp(`waiting up to 30\\.0 s for another rc\\.libvirt run \\(pid ${a0.pid}, "soft_restart"\\)`));
    expect(lockIsFree()).toBe(true);
  });

  it('fails with the daemon\'s own error when libvirtd cannot start', async () => {
    expect((await rc('stop')).code).toBe(0);
    const r = await rc('start', { LIBVIRTD_OPTS: `-f ${dir}/no-such-libvirtd.conf -p ${pidfile('libvirtd')}` });
    expect(r.code).toBe(1);
    expect(r.out).toContain('libvirtd did not start');
    expect(r.out).toContain("Can't load config file");
    expect(r.out).toContain('no-such-libvirtd.conf');
    expect(runningPid('libvirtd')).toBeUndefined();
  });

  it('does not start a second daemon beside one that runs under another pidfile, and never stops that one', async () => {
    expect((await rc('stop')).code).toBe(0);
    const strayPidfile = join(dir, 'stray-virtlogd.pid');
    const r0 = await runCommand('/usr/sbin/virtlogd', ['-d', '-f', '/etc/libvirt/virtlogd.conf', '-p', strayPidfile], { timeoutMs: 30_000 });
    expect(r0.code).toBe(0);
    const strayPid = await waitFor('the stray virtlogd', () => {
      const pid = existsSync(strayPidfile) ? Number(readFileSync(strayPidfile, 'utf8').trim()) : NaN;
      return Number.isInteger(pid) && isPidAlive(pid) ? pid : undefined;
    }, { timeoutMs: 30_000 });
    const stray = identifyPid(strayPid) as ProcessIdentity;
    strays.push(stray);
    const start = await rc('start');
    expect(start.code).toBe(1);
    expect(start.out).toContain(`virtlogd also runs as pid ${strayPid}`);
    expect(start.out).toContain('not starting a second one');
    expect(findPidsByComm('virtlogd')).toEqual([strayPid]);
    const status = JSON.parse((await cli(['status', '--json'])).stdout) as Status;
    expect(status.daemons.find((d) => d.name === 'virtlogd')).toMatchObject({ running: false, otherPids: [strayPid] });
    const stop = await rc('stop');
    expect(stop.out).toContain(`virtlogd also runs as pid ${strayPid}`);
    expect(stop.out).toContain('left alone');
    expect(isPidAlive(strayPid)).toBe(true);
    await terminateProcess(stray, 20_000);
  });

  it('on SIGTERM starts nothing new, says so and releases the lock', async () => {
    expect((await rc('stop')).code).toBe(0);
    // A virsh that never answers keeps start waiting for libvirtd.
    const fakeVirsh = join(dir, 'virsh-that-hangs');
    writeFileSync(fakeVirsh, '#!/bin/sh\nexec sleep 300\n', { mode: 0o755 });
    const child = spawn(process.execPath, [join(repoRoot, 'dist', 'rc.libvirt'), 'start'], {
      env: { ...env, VIRSH: fakeVirsh, DAEMON_TIMEOUT: '600' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ownChildren.push(child);
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await waitFor('start to wait for libvirtd', () => out.includes('libvirtd started'), { timeoutMs: 60_000 });
    remember();
    child.kill('SIGTERM');
    // Well inside DAEMON_TIMEOUT (600 s): the interrupt ended the wait.
    const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 120_000))]);
    expect(code).toBe(1);
    expect(out).toContain('SIGTERM received');
    expect(out).toContain('interrupted');
    expect(lockIsFree()).toBe(true);
    expect((await rc('stop')).code).toBe(0);
  });

  it('the bundled rc.libvirt: start brings all three up and returns when virsh answers, stop brings them down, status tells the truth', async () => {
    const bin = join(repoRoot, 'dist', 'rc.libvirt');
    const run = (...args: string[]) => runCommand(process.execPath, [bin, ...args], { timeoutMs: 170_000, env });
    expect((await rc('stop')).code).toBe(0);
    expect((await run('status')).code).toBe(3);
    const start = await run('start');
    remember();
    expect(start.code, start.stdout + start.stderr).toBe(0);
    expect((await runVirsh(['list', '--all'])).code).toBe(0);
    const up = JSON.parse((await run('status', '--json')).stdout) as Status;
    expect(up.daemons.map((d) => [d.name, d.pid])).toEqual(DAEMONS.map((n) => [n, runningPid(n) ?? null]));
    expect(up.daemons.every((d) => d.running)).toBe(true);
    expect((await run('status')).code).toBe(0);
    const stop = await run('stop');
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect(DAEMONS.map(runningPid)).toEqual([undefined, undefined, undefined]);
    const down = await run('status', '--json');
    expect(down.code).toBe(3);
    expect((JSON.parse(down.stdout) as Status).daemons.every((d) => !d.running)).toBe(true);
  });

  it('refuses a settings file with errors, naming file, line and key (exit 6)', async () => {
    const bad = join(dir, 'bad.conf');
    writeFileSync(bad, '# ok\nTIMEOUT=300\nTIMEOUT=abc\n');
    const r = await cli(['--config', bad, 'stop']);
    expect(r.code).toBe(6);
    expect(r.stderr).toContain(`${bad}:3: TIMEOUT`);
    writeFileSync(bad, 'NO_SUCH_SETTING=1\n');
    const r2 = await cli(['--config', bad, 'start']);
    expect(r2.code).toBe(6);
    expect(r2.stderr).toContain(`${bad}:1: NO_SUCH_SETTING`);
  });
});
