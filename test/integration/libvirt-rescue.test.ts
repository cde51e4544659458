// libvirtd frozen with SIGSTOP: every driver call fails "not reachable" at its
// deadline instead of hanging; a frozen libvirtd still holds the guests'
// monitors (no QMP greeting); once it is ended by its pid the rescue path
// powers the guests off through QMP, and a new libvirtd reports them shut off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConsole } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons, type LibvirtDaemons } from '../helpers/daemons.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { identifyPid, isSameProcessAlive, waitFor, type ProcessIdentity } from '../helpers/process.js';
import { requireTestbed } from '../helpers/testbed.js';
import { LIBVIRT_URI, domainState } from '../helpers/virsh.js';
import { createLibvirtDriver, type LibvirtDriver } from '../../src/domain/libvirt/driver.js';
import { isGuestQemu } from '../../src/domain/libvirt/rescue.js';
import { createLibvirtRescueDriver } from '../../src/domain/libvirt/rescue-driver.js';
import { readStatusFiles } from '../../src/domain/libvirt/status-files.js';
import { connectQmp } from '../../src/qmp/qmp-client.js';
import { NotReachableError } from '../../src/domain/errors.js';
import { createMemoryLog } from '../../src/util/log.js';

const op = () => ({ signal: AbortSignal.timeout(60_000) });

describe('a hung libvirtd and the QMP rescue path', () => {
  let daemons: LibvirtDaemons;
  let libvirtd: ProcessIdentity | undefined;
  let guests: LibvirtGuest[] = [];
  let driver: LibvirtDriver;
  const log = createMemoryLog();

  beforeAll(async () => {
    requireTestbed();
    daemons = await startLibvirtDaemons();
    guests = await Promise.all([
      defineLibvirtGuest({ name: "rescue web server's", memMiB: 128 }),
      defineLibvirtGuest({ name: '--rescue dd', memMiB: 128 }),
    ]);
    const pid = daemons.started.find((d) => d.name === 'libvirtd')?.pid;
    if (pid === undefined) throw new Error('this test freezes libvirtd, so it must start its own; one was running already');
    libvirtd = identifyPid(pid);
    // A 1.5 s hung window (20 s in production) keeps the frozen-daemon case short: every call, long ones too, fails at 1.5 s.
    driver = createLibvirtDriver({ uri: LIBVIRT_URI, callTimeoutMs: 1500, hungWindowMs: 1500, log });
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      await driver?.close();
      if (libvirtd && isSameProcessAlive(libvirtd)) process.kill(libvirtd.pid, 'SIGCONT');
      // A libvirtd again, so the guests can be removed through it.
      await startLibvirtDaemons();
      await removeLibvirtGuests();
    } finally {
      await stopLibvirtDaemons();
    }
  });

  it('fails every call with "not reachable" at its deadline while libvirtd is frozen', async () => {
    process.kill(libvirtd!.pid, 'SIGSTOP');
    const id = guests[0]!.uuid;
    const calls: [string, () => Promise<unknown>][] = [
      ['ping', () => driver.ping(op())],
      ['listGuests', () => driver.listGuests(op())],
      ['getGuest', () => driver.getGuest(id, op())],
      ['save', () => driver.save(id, op())],
      ['shutdown', () => driver.shutdown(id, op())],
      ['destroy', () => driver.destroy(id, op())],
      ['start', () => driver.start(id, op())],
      ['waitForState', () => driver.waitForState(id, ['shutoff'], op())],
      ['listActiveNetworks', () => driver.listActiveNetworks(op())],
    ];
    const results = await Promise.all(calls.map(async ([name, call]) => [name, await call().then(() => 'resolved', (e: unknown) => e)] as const));
    for (const [name, err] of results) {
      expect(err, name).toBeInstanceOf(NotReachableError);
      expect((err as Error).message, name).toMatch(/did not answer within 1\.5 s/);
    }
  });

  it('cannot reach a monitor a frozen libvirtd holds: no QMP greeting', async () => {
    const { guests: found } = await readStatusFiles();
    const g = found.find((x) => x.uuid === guests[0]!.uuid)!;
    expect(g).toMatchObject({ name: guests[0]!.name, state: 'running' });
    const err = await connectQmp(g.monitorPath, { signal: AbortSignal.timeout(1500) }).then(
      async (c) => {
        await c.close();
        return 'connected';
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NotReachableError);
    expect((err as Error).message).toMatch(/no QMP greeting/);
  });

  it('powers the guests off through QMP once the hung libvirtd is ended', async () => {
    const boots = guests.map((g) => g.bootId());
    // What the guest side does with a hung libvirtd: SIGKILL by its checked pid (a stopped process cannot act on SIGTERM).
    process.kill(libvirtd!.pid, 'SIGKILL');
    await waitFor('the frozen libvirtd to exit', () => !isSameProcessAlive(libvirtd!), { timeoutMs: 20_000, intervalMs: 50 });
    // Then the ladder's steps through the rescue driver: the power button, and the wait for shutoff.
    const rescue = createLibvirtRescueDriver({ uri: LIBVIRT_URI, log });
    try {
      await Promise.all(guests.map((g) => rescue.shutdown(g.uuid, op())));
      const states = await Promise.all(guests.map((g) => rescue.waitForState(g.uuid, ['shutoff'], op())));
      expect(states).toEqual(guests.map(() => 'shutoff'));
    } finally {
      await rescue.close();
    }
    guests.forEach((g, i) => expect(readConsole(g.consolePath)).toContain(`RCL-POWEROFF boot=${boots[i]}`));
    // Under -no-shutdown the QEMU stays, powered off, for libvirt to reap.
    const { guests: status } = await readStatusFiles();
    for (const g of guests) expect(await isGuestQemu(status.find((s) => s.uuid === g.uuid)!)).toBe(true);
  });

  it('a new libvirtd reports them shut off, not crashed', async () => {
    await startLibvirtDaemons();
    for (const g of guests) {
      await waitFor(`${g.name} to be shut off`, async () => (await domainState(g.uuid)) === 'shut off', { timeoutMs: 60_000, intervalMs: 250 });
      expect(await new Promise<string>((resolve) => {
        void driver.getGuest(g.uuid, op()).then((x) => resolve(x.stateDetail), (e: Error) => resolve(e.message));
      })).toBe('shut off (shutdown)');
    }
  });
});
