// The rescue path against plain QEMU guests run like libvirt runs them
// (-no-shutdown, -uuid) with status files like libvirt's: no libvirtd needed.
// A guest powers off and stays in QEMU's `shutdown` state; a stubborn one is
// quit at the deadline; the rescue driver refuses saves and shuts down via QMP.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConsole } from '../helpers/console.js';
import { makeTempDir } from '../helpers/process.js';
import { bootQemuGuest, cleanupAll, type QemuGuest } from '../helpers/qemu-guest.js';
import { requireTestbed } from '../helpers/testbed.js';
import { createLibvirtRescueDriver } from '../../src/domain/libvirt/rescue-driver.js';
import { InterruptedError, OperationRefusedError } from '../../src/domain/errors.js';
import { connectQmp } from '../../src/qmp/qmp-client.js';
import { createMemoryLog } from '../../src/util/log.js';
import type { DomainDriver } from '../../src/domain/types.js';

const op = () => ({ signal: AbortSignal.timeout(60_000) });

describe('QMP rescue of libvirt guests', () => {
  let statusDir: string;
  const booted: { g: QemuGuest; uuid: string }[] = [];
  let driver: DomainDriver;
  const log = createMemoryLog();

  async function boot(name: string, stubborn = false): Promise<{ g: QemuGuest; uuid: string }> {
    const uuid = randomUUID();
    const g = await bootQemuGuest({ name, memMiB: 128, stubborn, extraArgs: ['-uuid', uuid, '-no-shutdown'] });
    // What libvirt writes to /run/libvirt/qemu/NAME.xml, reduced to what the rescue reads.
    await writeFile(
      join(statusDir, `${name}.xml`),
      `<domstatus state='running' reason='booted' pid='${g.pid}'>
  <monitor path='${g.qmpSocket}' type='unix'/>
  <domain type='qemu' id='1'><name>${name}</name><uuid>${uuid}</uuid><memory unit='KiB'>131072</memory></domain>
</domstatus>
`,
    );
    const entry = { g, uuid };
    booted.push(entry);
    return entry;
  }

  beforeAll(async () => {
    requireTestbed();
    statusDir = await makeTempDir('rcl-status-');
    await writeFile(join(statusDir, 'damaged.xml'), "<domstatus state='running' pid='12'><monitor");
    await Promise.all([boot('web server'), boot('--dd', true), boot('-dash')]);
    driver = createLibvirtRescueDriver({ uri: 'qemu:///system', statusDir, log, quitWaitMs: 5000 });
  }, 10 * 60_000);

  afterAll(async () => {
    await driver?.close();
    await cleanupAll();
  });

  it('lists the running guests from the status files and reports the damaged one', async () => {
    const guests = await driver.listGuests(op());
    expect(guests.map((g) => [g.name, g.state]).sort()).toEqual([['--dd', 'running'], ['-dash', 'running'], ['web server', 'running']]);
    expect(guests[0]!.saveBlockers).toContain('libvirtd not answering: cannot managedsave');
    expect(log.lines.some((l) => l.level === 'warn' && /damaged\.xml: skipped/.test(l.msg))).toBe(true);
  });

  it('refuses a save and shuts a guest down through QMP', async () => {
    const { g, uuid } = booted.find((b) => b.g.name === '-dash')!;
    await expect(driver.save(uuid, op())).rejects.toBeInstanceOf(OperationRefusedError);
    await driver.shutdown(uuid, op());
    expect(await driver.waitForState(uuid, ['shutoff'], op())).toBe('shutoff');
    expect(readConsole(g.consolePath)).toContain(`RCL-POWEROFF boot=${g.bootId}`);
    // -no-shutdown: QEMU stays, powered off, as libvirt wants to find it.
    expect(g.isRunning()).toBe(true);
    // destroy: QMP quit, the QEMU exits.
    await driver.destroy(uuid, op());
    expect(await g.exited).toEqual({ code: 0, signal: null });
    expect((await driver.listGuests(op())).map((x) => x.name)).not.toContain('-dash');
    await driver.close();
  });

  it('powers a guest off and quits a stubborn one at the deadline, closing every monitor', async () => {
    const web = booted.find((b) => b.g.name === 'web server')!;
    const dd = booted.find((b) => b.g.name === '--dd')!;
    // What the ladder does with the rescue driver: the power button, a wait to the deadline, destroy.
    const rescue = createLibvirtRescueDriver({ uri: 'qemu:///system', statusDir, log, quitWaitMs: 5000 });
    try {
      await Promise.all([rescue.shutdown(web.uuid, op()), rescue.shutdown(dd.uuid, op())]);
      expect(await rescue.waitForState(web.uuid, ['shutoff'], op())).toBe('shutoff');
      // The stubborn guest ignores the button: its wait ends at the deadline, and destroy quits its QEMU.
      await expect(rescue.waitForState(dd.uuid, ['shutoff'], { signal: AbortSignal.timeout(8000) })).rejects.toBeInstanceOf(InterruptedError);
      await rescue.destroy(dd.uuid, op());
    } finally {
      await rescue.close();
    }
    expect(web.g.isRunning()).toBe(true);
    expect(await dd.g.exited).toEqual({ code: 0, signal: null });
    // Every monitor connection was closed: a new client gets its greeting at once.
    const again = await connectQmp(web.g.qmpSocket, { signal: AbortSignal.timeout(3000), guest: 'web server' });
    await again.close();
  });
});
