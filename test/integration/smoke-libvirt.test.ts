// Smoke test of the libvirt test bed: the daemons come up, the test guest
// boots as a libvirt domain, `virsh shutdown` powers it off, and a stubborn
// one ignores it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConsole } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons } from '../helpers/daemons.js';
import { defineLibvirtGuest, libvirtGuestPid, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { sleep, waitFor } from '../helpers/process.js';
import { cleanupAll } from '../helpers/qemu-guest.js';
import { requireTestbed } from '../helpers/testbed.js';
import { domainState, virsh } from '../helpers/virsh.js';

describe('libvirt test bed', () => {
  let plain: LibvirtGuest;
  let stubborn: LibvirtGuest;

  beforeAll(async () => {
    requireTestbed();
    await startLibvirtDaemons();
    // Names with spaces and a leading dash must work everywhere.
    [plain, stubborn] = await Promise.all([
      defineLibvirtGuest({ name: '-rcl smoke plain', memMiB: 128 }),
      defineLibvirtGuest({ name: 'rcl smoke stubborn', memMiB: 128, stubborn: true }),
    ]);
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      await removeLibvirtGuests();
    } finally {
      try {
        await stopLibvirtDaemons();
      } finally {
        await cleanupAll();
      }
    }
  });

  it('boots both guests to their ready lines', async () => {
    for (const g of [plain, stubborn]) {
      expect(await domainState(g.uuid)).toBe('running');
      expect(g.bootId()).toMatch(/^[0-9a-f-]{36}$/);
      expect(libvirtGuestPid(g)).toBeGreaterThan(0);
    }
    expect(plain.bootId()).not.toBe(stubborn.bootId());
  });

  it('shuts a guest off on `virsh shutdown`', async () => {
    const bootId = plain.bootId();
    await virsh(['shutdown', `--domain=${plain.name}`]);
    await waitFor(`${plain.name} to be shut off`, async () => (await domainState(plain.uuid)) === 'shut off', {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    expect(readConsole(plain.consolePath)).toContain(`RCL-POWEROFF boot=${bootId}`);
  });

  it('leaves a stubborn guest running after `virsh shutdown`', async () => {
    await virsh(['shutdown', `--domain=${stubborn.name}`]);
    await waitFor('the stubborn guest to see the button', () => readConsole(stubborn.consolePath).includes('RCL-IGNORED'), {
      timeoutMs: 30_000,
    });
    await sleep(3_000);
    expect(await domainState(stubborn.uuid)).toBe('running');
    expect(readConsole(stubborn.consolePath)).not.toContain('RCL-POWEROFF');
  });
});
