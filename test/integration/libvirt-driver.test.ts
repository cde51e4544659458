// The libvirt driver on a real libvirtd with TCG test guests whose names have
// spaces and leading dashes: every operation, saves with progress that restore
// the same boot, a paused guest restored paused, an aborted save that leaves the
// guest running, and waits ended by the event stream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleOffset, readConsole, waitForGuestReady } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons } from '../helpers/daemons.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { requireTestbed } from '../helpers/testbed.js';
import { LIBVIRT_URI, virsh } from '../helpers/virsh.js';
import { createLibvirtDriver, type LibvirtDriver } from '../../src/domain/libvirt/driver.js';
import { InterruptedError, OperationRefusedError } from '../../src/domain/errors.js';
import { createMemoryLog } from '../../src/util/log.js';
import type { SaveProgress } from '../../src/domain/types.js';

const NAMES = ['web server', '-dash', '--dd'] as const;
const op = (ms = 120_000) => ({ signal: AbortSignal.timeout(ms) });

function readyLines(g: LibvirtGuest, from = 0): number {
  return (readConsole(g.consolePath).slice(from).match(/^RCL-READY /gm) ?? []).length;
}

describe('libvirt driver on a real libvirtd', () => {
  const guests = new Map<string, LibvirtGuest>();
  let driver: LibvirtDriver;
  const log = createMemoryLog();

  beforeAll(async () => {
    requireTestbed();
    await startLibvirtDaemons();
    const defined = await Promise.all([
      defineLibvirtGuest({ name: 'web server', memMiB: 320, fill: 240 }),
      defineLibvirtGuest({ name: '-dash', memMiB: 128 }),
      defineLibvirtGuest({ name: '--dd', memMiB: 128 }),
    ]);
    for (const g of defined) guests.set(g.name, g);
    await virsh([
      'metadata', `--domain=${guests.get('web server')!.uuid}`, '--uri', 'urn:rc-libvirt:policy:1', '--key', 'rcl', '--config',
      '--set', '<policy order="2" on_shutdown="shutdown" timeout="120" on_boot="ignore"/>',
    ]);
    await virsh([
      'metadata', `--domain=${guests.get('-dash')!.uuid}`, '--uri', 'urn:rc-libvirt:policy:1', '--key', 'rcl', '--config',
      '--set', '<policy on_shutdown="hibernate"/>',
    ]);
    // A long safety poll: a wait that ends must have been ended by an event.
    driver = createLibvirtDriver({ uri: LIBVIRT_URI, callTimeoutMs: 60_000, safetyPollMs: 600_000, log });
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      await driver?.close();
      await removeLibvirtGuests();
    } finally {
      await stopLibvirtDaemons();
    }
  });

  it('answers a ping', async () => {
    await expect(driver.ping(op())).resolves.toBeUndefined();
  });

  it('lists the guests by UUID with name, state, memory, policy and blockers', async () => {
    const listed = await driver.listGuests(op());
    for (const name of NAMES) {
      const g = listed.find((x) => x.id === guests.get(name)!.uuid);
      expect(g, name).toMatchObject({ name, uri: LIBVIRT_URI, state: 'running', persistent: true, autostart: false, hasSavedImage: false, saveBlockers: [] });
      expect(g!.stateDetail).toBe('running (booted)');
    }
    const web = listed.find((x) => x.name === 'web server')!;
    expect(web.memoryKiB).toBe(320 * 1024);
    expect(web.policy).toEqual({ order: 2, onShutdown: 'shutdown', timeout: 120, onBoot: 'ignore' });
    // A bad value is reported and ignored, never a crash.
    expect(listed.find((x) => x.name === '-dash')!.policy).toEqual({});
    expect(log.lines.some((l) => l.level === 'warn' && /on_shutdown="hibernate" ignored/.test(l.msg))).toBe(true);
  });

  it('takes every guest through save, restore, reboot, shutdown, start and destroy', async () => {
    await Promise.all(
      NAMES.map(async (name) => {
        const g = guests.get(name)!;
        const id = g.uuid;
        const boot = g.bootId();
        // managedsave with progress, then start restores the same boot.
        const progress: SaveProgress[] = [];
        await driver.save(id, { ...op(), onProgress: (p) => progress.push(p) });
        expect(progress.at(-1)?.fraction, name).toBe(1);
        expect(await driver.getGuest(id, op())).toMatchObject({ state: 'shutoff', stateDetail: 'shut off (saved)', hasSavedImage: true });
        let from = consoleOffset(g.consolePath);
        await driver.start(id, op());
        expect(await driver.waitForState(id, ['running'], op())).toBe('running');
        expect(await driver.getGuest(id, op())).toMatchObject({ state: 'running', hasSavedImage: false });
        expect(g.bootId(), name).toBe(boot);
        expect(readyLines(g, from), name).toBe(0);
        // reboot resolves once libvirt reports the reset and the guest runs again: a new boot.
        from = consoleOffset(g.consolePath);
        await driver.reboot(id, op());
        const rebooted = await waitForGuestReady(g.consolePath, { timeoutMs: 120_000, fromOffset: from });
        expect(rebooted, name).not.toBe(boot);
        // shutdown, waited for by event.
        await driver.shutdown(id, op());
        expect(await driver.waitForState(id, ['shutoff'], op())).toBe('shutoff');
        expect(readConsole(g.consolePath)).toContain(`RCL-POWEROFF boot=${rebooted}`);
        // start (a fresh boot), then destroy.
        from = consoleOffset(g.consolePath);
        await driver.start(id, op());
        await waitForGuestReady(g.consolePath, { timeoutMs: 120_000, fromOffset: from });
        await driver.destroy(id, op());
        expect((await driver.getGuest(id, op())).state).toBe('shutoff');
        // destroy of a guest that is off already is fine; a second start of a running one is refused.
        await driver.destroy(id, op());
        from = consoleOffset(g.consolePath);
        await driver.start(id, op());
        await expect(driver.start(id, op())).rejects.toBeInstanceOf(OperationRefusedError);
        await waitForGuestReady(g.consolePath, { timeoutMs: 120_000, fromOffset: from });
      }),
    );
  });

  it('ends a wait for shutoff by the Stopped event, not by a poll', async () => {
    const id = guests.get('--dd')!.uuid;
    const before = { ...driver.waitStats };
    const waiting = driver.waitForState(id, ['shutoff'], op());
    await driver.shutdown(id, op());
    expect(await waiting).toBe('shutoff');
    expect(driver.eventsAlive).toBe(true);
    expect(driver.waitStats.byEvent).toBe(before.byEvent + 1);
    expect(driver.waitStats.byPoll).toBe(before.byPoll);
  });

  it('reports lifecycle events with the guest UUID', async () => {
    const g = guests.get('--dd')!;
    const seen: string[] = [];
    const off = driver.onLifecycle((ev) => {
      if (ev.guestId === g.uuid) seen.push(`${ev.event} ${ev.detail}`);
    });
    const from = consoleOffset(g.consolePath);
    await driver.start(g.uuid, op());
    await waitForGuestReady(g.consolePath, { timeoutMs: 120_000, fromOffset: from });
    off();
    expect(seen).toContain('Started Booted');
  });

  it('restores a paused guest paused', async () => {
    const g = guests.get('-dash')!;
    await virsh(['suspend', `--domain=${g.uuid}`]);
    await driver.save(g.uuid, op());
    expect((await driver.getGuest(g.uuid, op())).hasSavedImage).toBe(true);
    const from = consoleOffset(g.consolePath);
    await driver.start(g.uuid, op());
    expect(await driver.getGuest(g.uuid, op())).toMatchObject({ state: 'paused' });
    await driver.resume(g.uuid, op());
    expect(await driver.waitForState(g.uuid, ['running'], op())).toBe('running');
    expect(readyLines(g, from)).toBe(0);
  });

  it('aborts a save through the job abort and leaves the guest running', async () => {
    const g = guests.get('web server')!;
    const boot = g.bootId();
    // Unthrottled, this save is over in about a second, often before virsh's first
    // progress report (every 0.5 s) on a busy host. libvirt ignores migrate-setspeed
    // for a save, so cap QEMU's own threads (the migration thread among them, not the
    // vCPU) to 2% of a CPU through the emulator cgroup: the save then lasts many
    // seconds and the abort sent at the first progress report meets it running.
    const dom = `--domain=${g.uuid}`;
    await virsh(['schedinfo', dom, '--live', '--set', 'emulator_period=100000', '--set', 'emulator_quota=2000']);
    try {
      expect(await virsh(['schedinfo', dom, '--live'])).toMatch(/^emulator_quota\s*:\s*2000$/m);
      const ac = new AbortController();
      const seen: number[] = [];
      const err = await driver
        .save(g.uuid, {
          signal: ac.signal,
          onProgress: (p) => {
            seen.push(p.fraction);
            // At the first sign of the job: the save must still be running when the abort reaches libvirt.
            ac.abort(new Error('operator'));
          },
        })
        .catch((e: unknown) => e);
      expect(err, `progress seen: ${seen.join(' ')}`).toBeInstanceOf(InterruptedError);
      expect(seen.length).toBeGreaterThan(0);
      expect(await driver.getGuest(g.uuid, op())).toMatchObject({ state: 'running', hasSavedImage: false });
      expect(g.bootId()).toBe(boot);
      // abort with no job in flight changes nothing.
      await driver.abort(g.uuid, op());
    } finally {
      await virsh(['schedinfo', dom, '--live', '--set', 'emulator_quota=-1']);
    }
  });

  it('lists and destroys active networks', async () => {
    // A macvtap-style network: starting it creates no bridge and no firewall rules.
    const xml = "<network><name>rcl-test-net</name><forward mode='bridge'><interface dev='rcl-none0'/></forward></network>";
    const { writeFile, rm } = await import('node:fs/promises');
    const path = `${guests.get('web server')!.dir}/net.xml`;
    await writeFile(path, xml);
    await virsh(['net-create', `--file=${path}`]);
    try {
      expect(await driver.listActiveNetworks(op())).toContain('rcl-test-net');
      await driver.destroyNetwork('rcl-test-net', op());
      expect(await driver.listActiveNetworks(op())).not.toContain('rcl-test-net');
    } finally {
      await virsh(['net-destroy', '--network=rcl-test-net']).catch(() => undefined);
      await rm(path, { force: true });
    }
  });
});
