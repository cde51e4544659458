import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULTS, type Settings } from '../../../src/config/settings.js';
import { JOURNAL_FILE } from '../../../src/guests/journal.js';
import { pendingGuests, rebootGuests, startGuests, stopGuests, type GuestStepContext } from '../../../src/rc/guest-steps.js';
import { createMemoryLog } from '../../../src/util/log.js';
import { libvirtLikeDriver, type FakeDriver } from '../../fakes/libvirt-like-driver.js';
import { qmpLikeDriver } from '../../fakes/qmp-like-driver.js';

const fast = { saveMs: 20, shutdownMs: 20, startMs: 5 };

describe('stopGuests and startGuests', () => {
  let dir: string;
  let settings: Settings;
  let out: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-steps-'));
    settings = { ...DEFAULTS, stateDir: join(dir, 'state'), timeout: 5, uris: ['fake:///one'] };
    out = '';
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const ctx = (over: Partial<GuestStepContext> = {}): GuestStepContext => {
    const stdout = new PassThrough();
    stdout.on('data', (b: Buffer) => (out += b.toString()));
    return { settings, log: createMemoryLog(), signal: new AbortController().signal, dryRun: false, stdout, ...over };
  };
  // The host's libvirtd is never probed or ended from here: each rescue step is a
  // fake, and the default ones (which read /run/libvirt and SIGKILL libvirtd) fail the test.
  const hostTouched: string[] = [];
  const noHost = {
    probeLibvirtd: async () => {
      hostTouched.push('probeLibvirtd');
      throw new Error('unit test: the host libvirtd must not be probed here');
    },
    releaseMonitors: async () => {
      hostTouched.push('releaseMonitors');
      throw new Error('unit test: the host libvirtd must not be ended here');
    },
    createRescueDriver: () => {
      hostTouched.push('createRescueDriver');
      throw new Error('unit test: no rescue driver here');
    },
  };
  afterEach(() => {
    expect(hostTouched.splice(0)).toEqual([]);
  });
  const deps = (d: FakeDriver) => ({ ...noHost, openDrivers: async () => [d] });

  it('two connections to one daemon (the same UUIDs): stop and guests_reboot handle each guest once, through the first; the other is named', async () => {
    const spec = () => [{ name: 'web', id: '0f0e0d0c-0b0a-4909-8807-060504030201', script: fast }];
    const a = libvirtLikeDriver(spec(), { uri: 'fake:///one' });
    const b = libvirtLikeDriver(spec(), { uri: 'fake:///same-by-socket' });
    const two = { ...noHost, openDrivers: async () => [a, b] };
    const log = createMemoryLog();
    const rebooted = await rebootGuests(ctx({ log }), two);
    expect(rebooted.outcomes!.map((o) => `${o.guest.name}@${o.guest.uri}:${o.result}`)).toEqual(['web@fake:///one:rebooted']);
    expect(b.calls.filter((c) => c.op === 'reboot')).toEqual([]);
    expect(log.lines.some((l) => l.level === 'notice' && l.msg.includes('listed by fake:///one and fake:///same-by-socket: handled once, through fake:///one'))).toBe(true);
    const stopped = await stopGuests(ctx(), 'policy', two);
    expect(stopped.outcomes!.map((o) => `${o.guest.name}@${o.guest.uri}:${o.result}`)).toEqual(['web@fake:///one:saved']);
    expect(b.calls.filter((c) => c.op === 'save' || c.op === 'shutdown')).toEqual([]);
  });

  it('stop with PARALLEL=1: warns of the save queue, shuts down the guest that gets no slot, journals each', async () => {
    // 1 GiB each at the planned 50 MiB/s: 20 s per save, timeout 5 s: the queue cannot finish.
    settings = { ...settings, parallel: 1 };
    const d = libvirtLikeDriver([
      { name: 'first', memoryKiB: 1024 * 1024, script: { saveMs: 3000, shutdownMs: 20 } },
      { name: 'second', memoryKiB: 1024 * 1024, script: { saveMs: 3000, shutdownMs: 20 } },
    ], { uri: 'fake:///one' });
    const c = ctx();
    const r = await stopGuests(c, 'policy', deps(d));
    expect(r.clean).toBe(true);
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.action}:${o.result}`)).toEqual(['first:save:saved', 'second:save->shutdown:shutdown']);
    const warnings = (c.log as ReturnType<typeof createMemoryLog>).lines.filter((l) => l.level === 'warn').map((l) => l.msg);
    expect(warnings.join('\n')).toMatch(/order group 0: at 50 MiB\/s per save and PARALLEL=1/);
    const journal = JSON.parse(await readFile(join(settings.stateDir, JOURNAL_FILE), 'utf8')) as { entries: { name: string; action: string }[] };
    expect(journal.entries.map((e) => `${e.name}:${e.action}`).sort()).toEqual(['first:saved', 'second:shutdown']);
  });

  it('stop journals what it did; start brings back exactly those guests, paused ones paused', async () => {
    const d = libvirtLikeDriver([
      { name: 'web', script: fast },
      { name: 'paused one', state: 'paused', script: fast },
      { name: '-gpu', saveBlockers: ['hostdev'], script: fast },
      { name: 'off', state: 'shutoff', script: fast },
    ], { uri: 'fake:///one' });
    const stop = await stopGuests(ctx(), 'policy', deps(d));
    expect(stop.clean).toBe(true);
    expect(out).toMatch(/GUEST +ACTION +RESULT/);
    expect(out).toContain("'-gpu'");
    expect((await pendingGuests(settings)).map((p) => [p.name, p.action, p.stateBefore]).sort()).toEqual([
      ['-gpu', 'shutdown', 'running'],
      ['paused one', 'saved', 'paused'],
      ['web', 'saved', 'running'],
    ]);
    const listedBefore = d.reads.listings;
    const start = await startGuests(ctx(), deps(d));
    expect(start.clean).toBe(true);
    // One listing of the connection answers every restore: no guest is looked up on its own.
    expect(d.reads.listings - listedBefore).toBe(1);
    expect(d.reads.lookups).toEqual([]);
    expect(d.state('web')).toBe('running');
    expect(d.state('paused one')).toBe('paused');
    expect(d.state('-gpu')).toBe('running');
    expect(d.state('off')).toBe('shutoff');
    expect(start.outcomes!.map((o) => `${o.guest.name}:${o.result}`).sort()).toEqual(['-gpu:started', 'paused one:restored', 'web:restored']);
    expect(await pendingGuests(settings)).toEqual([]);
  });

  it('leaves a guest libvirt already brought back alone and clears its entry; keeps one that fails', async () => {
    const d = libvirtLikeDriver([{ name: 'auto', script: fast }, { name: 'broken', script: { ...fast, startFails: 'no such network' } }], { uri: 'fake:///one' });
    await stopGuests(ctx(), 'policy', deps(d));
    await d.start('auto', { signal: new AbortController().signal });
    d.calls.length = 0;
    const start = await startGuests(ctx(), deps(d));
    expect(d.calls.filter((c) => c.name === 'auto').map((c) => c.op)).toEqual([]);
    expect(start.clean).toBe(false);
    expect(start.failed).toEqual(['broken']);
    expect((await pendingGuests(settings)).map((p) => p.name)).toEqual(['broken']);
  });

  it('qmp: a guest marked autostart and not in the journal is started (no daemon autostarts it); the others stay off', async () => {
    const d = qmpLikeDriver([{ name: 'auto', state: 'shutoff', autostart: true, script: fast }, { name: 'manual', state: 'shutoff', script: fast }]);
    const start = await startGuests(ctx(), deps(d));
    expect(start.outcomes!.map((o) => `${o.guest.name}:${o.result}:${o.reason}`)).toEqual(['auto:started:autostart']);
    expect(d.state('auto')).toBe('running');
    expect(d.state('manual')).toBe('shutoff');
  });

  it('honours on_boot=ignore per guest', async () => {
    const d = libvirtLikeDriver([{ name: 'db', policy: { onBoot: 'ignore' }, script: fast }], { uri: 'fake:///one' });
    await stopGuests(ctx(), 'policy', deps(d));
    const start = await startGuests(ctx(), deps(d));
    expect(start.outcomes![0]!.result).toBe('skipped');
    expect(d.state('db')).toBe('shutoff');
  });

  it('a damaged journal is kept aside and saved guests are restored all the same', async () => {
    const d = libvirtLikeDriver([{ name: 'saved', state: 'shutoff', hasSavedImage: true, script: fast }], { uri: 'fake:///one' });
    await (await import('node:fs/promises')).mkdir(settings.stateDir, { recursive: true });
    await writeFile(join(settings.stateDir, JOURNAL_FILE), '{broken');
    const c = ctx();
    const start = await startGuests(c, deps(d));
    expect(d.state('saved')).toBe('running');
    expect(start.outcomes![0]!.result).toBe('restored');
    expect((c.log as ReturnType<typeof createMemoryLog>).lines.some((l) => l.level === 'error' && /damaged/.test(l.msg))).toBe(true);
  });

  it('--dry-run prints the plan and changes nothing', async () => {
    const d = libvirtLikeDriver([{ name: 'web', script: fast }], { uri: 'fake:///one' });
    const r = await stopGuests(ctx({ dryRun: true }), 'policy', deps(d));
    expect(r.clean).toBe(true);
    // Only the listing was asked (it answered before a ping went out): nothing done to a guest.
    expect(d.calls.map((c) => c.op)).toEqual([]);
    expect(out).toMatch(/web +running .* save/);
    expect(out).toContain('dry run');
    await expect(readFile(join(settings.stateDir, JOURNAL_FILE))).rejects.toThrow();
  });

  it('a forced destroy makes the step unclean and is named', async () => {
    const d = libvirtLikeDriver([{ name: 'stubborn', policy: { timeout: 1 }, script: { shutdownMs: 'never' } }], { uri: 'fake:///one' });
    const r = await stopGuests(ctx(), 'shutdown', deps(d));
    expect(r.clean).toBe(false);
    expect(r.destroyed).toEqual(['stubborn']);
    expect(out).toMatch(/stubborn +shutdown->destroy +destroyed/);
  });

  it('libvirtd not answering: the hung daemon is ended and its guests go down through the rescue driver', async () => {
    const hung = libvirtLikeDriver([], { uri: 'qemu:///system', connection: { pingFails: 'virsh did not answer within 10 s' } });
    const rescued = libvirtLikeDriver([{ name: 'r1', saveBlockers: ['libvirtd not answering'], script: fast }, { name: 'r 2', state: 'paused', saveBlockers: ['x'], script: fast }], { uri: 'qemu:///system' });
    const released: string[] = [];
    const log = createMemoryLog();
    const r = await stopGuests(ctx({ log }), 'policy', {
      openDrivers: async () => [hung],
      probeLibvirtd: async () => ({ running: true, liveGuests: ['r1', 'r 2'] }),
      releaseMonitors: async () => void released.push('libvirtd'),
      createRescueDriver: () => rescued,
    });
    expect(released).toEqual(['libvirtd']);
    expect(log.lines.map((l) => l.msg).join('\n')).toContain('libvirtd does not answer (virsh did not answer within 10 s): rescue path');
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`).sort()).toEqual(['r 2:shutdown', 'r1:shutdown']);
    expect(r.clean).toBe(true);
    expect((await pendingGuests(settings)).map((p) => p.name).sort()).toEqual(['r 2', 'r1']);
  });

  // libvirtd down: virsh cannot connect, as a hung one would not answer.
  const downDriver = () => libvirtLikeDriver([], { uri: 'qemu:///system', connection: { pingFails: 'failed to connect to the hypervisor' } });

  it('libvirtd not running and no guest of it running (stop twice): says so plainly, nothing rescued, clean', async () => {
    const log = createMemoryLog();
    const touched: string[] = [];
    const r = await stopGuests(ctx({ log }), 'policy', {
      openDrivers: async () => [downDriver()],
      probeLibvirtd: async () => ({ running: false, liveGuests: [] }),
      releaseMonitors: async () => void touched.push('release'),
      createRescueDriver: () => {
        touched.push('rescue driver');
        return libvirtLikeDriver([], { uri: 'qemu:///system' });
      },
    });
    expect(touched).toEqual([]);
    expect(r.clean).toBe(true);
    expect(r.failed).toEqual([]);
    const text = log.lines.map((l) => `${l.level}: ${l.msg}`).join('\n');
    expect(text).toContain('libvirtd is not running and none of its guests runs: no guests to stop');
    expect(text).not.toMatch(/does not answer|rescue/);
    expect(log.lines.filter((l) => l.level === 'error')).toEqual([]);
  });

  it('libvirtd not running while its guests still run (it crashed): the rescue path brings them down, nothing to end', async () => {
    const log = createMemoryLog();
    const released: string[] = [];
    const rescued = libvirtLikeDriver([{ name: 'orphan', saveBlockers: ['libvirtd not running'], script: fast }], { uri: 'qemu:///system' });
    const r = await stopGuests(ctx({ log }), 'policy', {
      openDrivers: async () => [downDriver()],
      probeLibvirtd: async () => ({ running: false, liveGuests: ['orphan'] }),
      releaseMonitors: async () => void released.push('libvirtd'),
      createRescueDriver: () => rescued,
    });
    expect(released).toEqual([]);
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`)).toEqual(['orphan:shutdown']);
    const text = log.lines.map((l) => l.msg).join('\n');
    expect(text).toContain('libvirtd is not running, but its guests still run (orphan): rescue path');
    expect(text).not.toContain('does not answer');
  });

  it('--dry-run with libvirtd down: says what stop would do, ends nothing, makes no rescue driver', async () => {
    const touched: string[] = [];
    const deps = (liveGuests: string[]) => ({
      openDrivers: async () => [downDriver()],
      probeLibvirtd: async () => ({ running: false, liveGuests }),
      releaseMonitors: async () => void touched.push('release'),
      createRescueDriver: () => {
        touched.push('rescue driver');
        return libvirtLikeDriver([], { uri: 'qemu:///system' });
      },
    });
    const quiet = createMemoryLog();
    const none = await stopGuests(ctx({ log: quiet, dryRun: true }), 'policy', deps([]));
    expect(none.clean).toBe(true);
    expect(quiet.lines.map((l) => l.msg)).toContain('libvirtd is not running and none of its guests runs: no guests to stop');
    expect(quiet.lines.filter((l) => l.level === 'error')).toEqual([]);
    const log = createMemoryLog();
    const some = await stopGuests(ctx({ log, dryRun: true }), 'policy', deps(['orphan one']));
    expect(some.clean).toBe(false);
    const text = log.lines.map((l) => `${l.level}: ${l.msg}`).join('\n');
    expect(text).toContain("warn: libvirtd is not running: stop would take the rescue path and shut down through their QMP monitors: 'orphan one'");
    expect(text).not.toContain('its guests are not handled');
    expect(touched).toEqual([]);
    expect(out).toContain('(dry run: nothing was changed)');
  });

  it('a connection that answers its ping but cannot list is reported, never rescued (libvirtd is not killed)', async () => {
    const slow = libvirtLikeDriver([], { uri: 'qemu:///system', connection: { listFails: 'virsh list did not answer' } });
    const released: string[] = [];
    const r = await stopGuests(ctx(), 'policy', { ...noHost, openDrivers: async () => [slow], releaseMonitors: async () => void released.push('x') });
    expect(released).toEqual([]);
    expect(r.clean).toBe(false);
  });

  it('a connection that cannot be rescued makes the step unclean, naming it', async () => {
    const hung = libvirtLikeDriver([], { uri: 'qemu+ssh://far/system', connection: { pingFails: 'no answer' } });
    const r = await stopGuests(ctx(), 'policy', { ...noHost, openDrivers: async () => [hung] });
    expect(r.clean).toBe(false);
    expect(r.failed.join()).toContain('qemu+ssh://far/system');
  });
});
