// libvirtd frozen (SIGSTOP) during stop: the guest steps find it hung, end it
// by its checked pid, and bring every guest down through QMP — a clean
// power-off where the guest obeys, a destroy at its deadline where it does
// not — and stop ends within TIMEOUT plus the stated margin (STOP_MARGIN_MS).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLibvirtDriver } from '../../src/domain/libvirt/driver.js';
import { createLibvirtRescueDriver } from '../../src/domain/libvirt/rescue-driver.js';
import type { DomainDriver } from '../../src/domain/types.js';
import { STOP_MARGIN_MS } from '../../src/guests/ladder.js';
import { pendingGuests, stopGuests } from '../../src/rc/guest-steps.js';
import { readConsole } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons, type LibvirtDaemons } from '../helpers/daemons.js';
import { onlyGuests, stepContext, testSettings } from '../helpers/guest-steps.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { identifyPid, isSameProcessAlive, waitFor, type ProcessIdentity } from '../helpers/process.js';
import { requireTestbed } from '../helpers/testbed.js';
import { domainState, LIBVIRT_URI } from '../helpers/virsh.js';

const TIMEOUT_S = 40;

describe('stop with a frozen libvirtd', () => {
  let daemons: LibvirtDaemons;
  let libvirtd: ProcessIdentity | undefined;
  let obedient: LibvirtGuest;
  let stubborn: LibvirtGuest;
  const ours = new Set<string>();
  const drivers: DomainDriver[] = [];

  beforeAll(async () => {
    requireTestbed();
    daemons = await startLibvirtDaemons();
    [obedient, stubborn] = await Promise.all([
      defineLibvirtGuest({ name: '-rcl rescue obedient one', memMiB: 128 }),
      defineLibvirtGuest({ name: 'rcl rescue stubborn', memMiB: 128, stubborn: true }),
    ]);
    ours.add(obedient.uuid).add(stubborn.uuid);
    const pid = daemons.started.find((d) => d.name === 'libvirtd')?.pid;
    if (pid === undefined) throw new Error('this test freezes libvirtd, so it must start its own; one was running already');
    libvirtd = identifyPid(pid);
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      for (const d of drivers) await d.close().catch(() => undefined);
      if (libvirtd && isSameProcessAlive(libvirtd)) process.kill(libvirtd.pid, 'SIGCONT');
      await startLibvirtDaemons();
      await removeLibvirtGuests();
    } finally {
      await stopLibvirtDaemons();
    }
  });

  it('brings every guest down through QMP and ends within TIMEOUT plus the margin', async () => {
    const settings = await testSettings({ uris: [LIBVIRT_URI], timeout: TIMEOUT_S, libvirtdOpts: ' -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid ' });
    const run = stepContext(settings);
    const boot = obedient.bootId();
    process.kill(libvirtd!.pid, 'SIGSTOP');
    const t0 = performance.now();
    const r = await stopGuests(run.ctx, 'policy', {
      openDrivers: async () => {
        const d = onlyGuests(createLibvirtDriver({ uri: LIBVIRT_URI, log: run.log }), () => ours);
        drivers.push(d);
        return [d];
      },
      createRescueDriver: (uri, log) => {
        const d = onlyGuests(createLibvirtRescueDriver({ uri, log }), () => ours);
        drivers.push(d);
        return d;
      },
    });
    const elapsed = performance.now() - t0;
    expect(isSameProcessAlive(libvirtd!), 'the hung libvirtd was ended').toBe(false);
    const by = new Map(r.outcomes!.map((o) => [o.guest.name, o]));
    expect(by.get(obedient.name)?.result, run.output()).toBe('shutdown');
    expect(by.get(stubborn.name)?.result, run.output()).toBe('destroyed');
    expect(readConsole(obedient.consolePath)).toContain(`RCL-POWEROFF boot=${boot}`);
    expect(r.destroyed).toEqual([stubborn.name]);
    expect(elapsed, `stop took ${(elapsed / 1000).toFixed(1)} s`).toBeLessThan(TIMEOUT_S * 1000 + STOP_MARGIN_MS);
    expect(run.log.lines.some((l) => l.level === 'error' && /rescue path/.test(l.msg))).toBe(true);
    // Start will bring them back: the journal names both.
    expect((await pendingGuests(settings)).map((p) => p.name).sort()).toEqual([obedient.name, stubborn.name].sort());
    // A new libvirtd sees them shut off.
    await startLibvirtDaemons();
    for (const g of [obedient, stubborn]) {
      await waitFor(`${g.name} shut off`, async () => (await domainState(g.uuid)) === 'shut off', { timeoutMs: 60_000, intervalMs: 250 });
    }
  });
});
