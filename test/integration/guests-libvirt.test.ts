// The guest steps on real libvirt guests (TCG test guests): stop saves every
// guest concurrently and start restores each to the same boot; paused ones
// stay paused; policy from domain metadata overrides the settings and order
// groups run in sequence; a stubborn guest is destroyed at its deadline, not before.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLibvirtDriver } from '../../src/domain/libvirt/driver.js';
import type { DomainDriver } from '../../src/domain/types.js';
import { pendingGuests, startGuests, stopGuests } from '../../src/rc/guest-steps.js';
import { waitForGuestReady } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons } from '../helpers/daemons.js';
import { onlyGuests, stepContext, testSettings, withDrivers } from '../helpers/guest-steps.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { cleanupAll } from '../helpers/qemu-guest.js';
import { requireTestbed } from '../helpers/testbed.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';
import type { Settings } from '../../src/config/settings.js';
import { consoleOffset } from '../helpers/console.js';

describe('guest steps with libvirt', () => {
  let one: LibvirtGuest;
  let dash: LibvirtGuest;
  let paused: LibvirtGuest;
  let db: LibvirtGuest;
  let stubborn: LibvirtGuest;
  const ours = new Set<string>();
  let driver: DomainDriver;
  let settings: Settings;
  const deps = withDrivers(() => [onlyGuests(driver, () => ours)]);

  beforeAll(async () => {
    const programs = requireTestbed();
    await startLibvirtDaemons();
    [one, dash, paused, db, stubborn] = await Promise.all([
      defineLibvirtGuest({ name: 'rcl guests one', memMiB: 192, fill: 32 }),
      defineLibvirtGuest({ name: '-rcl guests dash', memMiB: 128 }),
      defineLibvirtGuest({ name: 'rcl guests paused', memMiB: 128 }),
      defineLibvirtGuest({ name: 'rcl guests db', memMiB: 128 }),
      defineLibvirtGuest({ name: 'rcl guests stubborn', memMiB: 128, stubborn: true, start: false }),
    ]);
    for (const g of [one, dash, paused, db, stubborn]) ours.add(g.uuid);
    ours.delete(stubborn.uuid);
    await virsh(['suspend', `--domain=${paused.uuid}`]);
    await virsh(['metadata', `--domain=${db.uuid}`, '--uri', 'urn:rc-libvirt:policy:1', '--key', 'rcl', '--config', '--live',
      '--set', '<policy order="2" on_shutdown="shutdown"/>']);
    driver = createLibvirtDriver({ uri: LIBVIRT_URI, virsh: programs.virsh });
    settings = await testSettings({ uris: [LIBVIRT_URI], timeout: 120, virsh: programs.virsh });
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      await driver?.close();
      await removeLibvirtGuests();
    } finally {
      try {
        await stopLibvirtDaemons();
      } finally {
        await cleanupAll();
      }
    }
  });

  it('stop saves every guest concurrently, paused as paused; metadata policy shuts db down first', async () => {
    const run = stepContext(settings);
    const r = await stopGuests(run.ctx, 'policy', deps);
    const by = new Map(r.outcomes!.map((o) => [o.guest.name, o]));
    expect(r.clean, run.output()).toBe(true);
    expect(by.get(one.name)?.result).toBe('saved');
    expect(by.get(dash.name)?.result).toBe('saved');
    expect(by.get(paused.name)?.result).toBe('saved');
    expect(by.get(paused.name)?.stateBefore).toBe('paused');
    expect(by.get(db.name)?.result).toBe('shutdown');
    // Order group 2 (db) is done before group 0 starts.
    const ev = run.events();
    const dbDone = ev.findIndex((l) => l.startsWith(`'${db.name}': shutdown`) && /\(\d+\.\d s\)$/.test(l));
    const firstSave = ev.findIndex((l) => l === `'${one.name}': save` || l === `'${dash.name}': save`);
    expect(dbDone, ev.join('\n')).toBeGreaterThan(-1);
    expect(firstSave, ev.join('\n')).toBeGreaterThan(dbDone);
    for (const g of [one, dash, paused, db]) expect(await domainState(g.uuid)).toBe('shut off');
    const pending = await pendingGuests(settings);
    expect(pending.map((p) => `${p.name}:${p.action}:${p.stateBefore}`).sort()).toEqual([
      `${dash.name}:saved:running`,
      `${db.name}:shutdown:running`,
      `${one.name}:saved:running`,
      `${paused.name}:saved:paused`,
    ].sort());
  });

  it('start restores each saved guest to the same boot, paused ones paused, and clears the journal', async () => {
    const boots = new Map([one, dash, paused].map((g) => [g.uuid, g.bootId()]));
    const dbFrom = consoleOffset(db.consolePath);
    const run = stepContext(settings);
    const r = await startGuests(run.ctx, deps);
    expect(r.clean, run.output()).toBe(true);
    expect(await domainState(one.uuid)).toBe('running');
    expect(await domainState(dash.uuid)).toBe('running');
    expect(await domainState(paused.uuid)).toMatch(/^paused/);
    expect(await domainState(db.uuid)).toBe('running');
    for (const g of [one, dash, paused]) expect(g.bootId()).toBe(boots.get(g.uuid));
    expect(r.outcomes!.find((o) => o.guest.id === db.uuid)?.result).toBe('started');
    expect(await pendingGuests(settings)).toEqual([]);
    await waitForGuestReady(db.consolePath, { timeoutMs: 120_000, fromOffset: dbFrom });
    await virsh(['resume', `--domain=${paused.uuid}`]);
  });

  it('guests_shutdown: a stubborn guest is destroyed at its deadline and not before; the others shut down; the summary names it', async () => {
    const from = consoleOffset(stubborn.consolePath);
    await virsh(['start', `--domain=${stubborn.uuid}`]);
    await waitForGuestReady(stubborn.consolePath, { timeoutMs: 120_000, fromOffset: from });
    ours.add(stubborn.uuid);
    const run = stepContext({ ...settings, timeout: 20 });
    const r = await stopGuests(run.ctx, 'shutdown', deps);
    const by = new Map(r.outcomes!.map((o) => [o.guest.name, o]));
    expect(r.clean).toBe(false);
    expect(r.destroyed).toEqual([stubborn.name]);
    expect(by.get(stubborn.name)?.ms).toBeGreaterThanOrEqual(20_000);
    for (const g of [one, dash, paused, db]) expect(by.get(g.name)?.result, run.output()).toBe('shutdown');
    expect(run.output()).toMatch(/'rcl guests stubborn' +shutdown->destroy +destroyed/);
    for (const g of [one, dash, paused, db, stubborn]) expect(await domainState(g.uuid)).toBe('shut off');
  });
});
