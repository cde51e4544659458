// stop when libvirtd is not running: after it crashed (SIGKILL) with a guest
// still running, the rescue path powers the guest off through QMP and says
// libvirtd is not running (not "does not answer"); a second stop (the bundled
// rc.libvirt) says plainly there are no guests to stop and exits 0, though the
// powered-off guest's QEMU lingers in `shutdown` until a libvirtd reaps it.
// Holds the host-wide libvirtd lock for the whole file.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DomainDriver } from '../../src/domain/types.js';
import { probeLibvirtd } from '../../src/guests/rescue.js';
import { pendingGuests, stopGuests } from '../../src/rc/guest-steps.js';
import { readConsole } from '../helpers/console.js';
import { startLibvirtDaemons, stopLibvirtDaemons, type LibvirtDaemons } from '../helpers/daemons.js';
import { ourLibvirtGuests, stepContext, testSettings } from '../helpers/guest-steps.js';
import { defineLibvirtGuest, libvirtGuestPid, removeLibvirtGuests, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { identifyPid, isSameProcessAlive, makeTempDir, terminateProcess, waitFor, type ProcessIdentity } from '../helpers/process.js';
import { runRc } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';
import { LIBVIRT_URI } from '../helpers/virsh.js';

describe('stop with libvirtd not running', () => {
  let daemons: LibvirtDaemons;
  let libvirtd: ProcessIdentity | undefined;
  let guest: LibvirtGuest;
  let qemu: ProcessIdentity | undefined;
  const ours = new Set<string>();
  const drivers: DomainDriver[] = [];

  beforeAll(async () => {
    requireTestbed();
    daemons = await startLibvirtDaemons();
    guest = await defineLibvirtGuest({ name: '-rcl down one', memMiB: 128 });
    ours.add(guest.uuid);
    const pid = daemons.started.find((d) => d.name === 'libvirtd')?.pid;
    if (pid === undefined) throw new Error('this test kills libvirtd, so it must start its own; one was running already');
    libvirtd = identifyPid(pid);
    const qpid = libvirtGuestPid(guest);
    qemu = qpid === undefined ? undefined : identifyPid(qpid);
  }, 25 * 60_000);

  afterAll(async () => {
    try {
      for (const d of drivers) await d.close().catch(() => undefined);
      // A new libvirtd reaps the powered-off QEMU (it lingers in `shutdown` under -no-shutdown).
      await startLibvirtDaemons();
      await removeLibvirtGuests();
    } finally {
      if (qemu && isSameProcessAlive(qemu)) await terminateProcess(qemu, 10_000);
      await stopLibvirtDaemons();
    }
  });

  it('libvirtd crashed, its guest still runs: the rescue path powers it off and says libvirtd is not running', async () => {
    expect(qemu, 'the guest runs').toBeDefined();
    process.kill(libvirtd!.pid, 'SIGKILL');
    await waitFor('libvirtd to be gone', () => !isSameProcessAlive(libvirtd!), { timeoutMs: 30_000, intervalMs: 100 });
    const settings = await testSettings({ uris: [LIBVIRT_URI], timeout: 60, libvirtdOpts: ' -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid ' });
    const run = stepContext(settings);
    const boot = guest.bootId();
    const r = await stopGuests(run.ctx, 'policy', ourLibvirtGuests(LIBVIRT_URI, ours, run.log, drivers));
    const said = run.log.lines.map((l) => `${l.level}: ${l.msg}`).join('\n');
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`), said + run.output()).toEqual([`${guest.name}:shutdown`]);
    expect(readConsole(guest.consolePath)).toContain(`RCL-POWEROFF boot=${boot}`);
    expect(said).toMatch(/libvirtd is not running, but its guests still run \([^)]*-rcl down one[^)]*\): rescue path/);
    expect(said).not.toContain('does not answer');
    expect(r.clean, said).toBe(true);
    expect((await pendingGuests(settings)).map((p) => p.name)).toEqual([guest.name]);
    // Its QEMU lingers in `shutdown` (-no-shutdown) until a libvirtd reaps it: the guest counts as not running.
    const after = await probeLibvirtd(settings, AbortSignal.timeout(30_000));
    expect(after.running).toBe(false);
    expect(after.liveGuests).not.toContain(guest.name);
  });

  it('stop again (the bundled rc.libvirt): no libvirtd, no guest: says so plainly and exits 0', async () => {
    const dir = await makeTempDir('rcl-down-');
    const env = {
      ...process.env,
      LC_ALL: 'C',
      RC_LIBVIRT_CONFIG: join(dir, 'no-such-config'),
      RC_LIBVIRT_RUN_DIR: join(dir, 'run'),
      RC_LIBVIRT_STATE_DIR: join(dir, 'state'),
      VIRTUSER: 'root',
      VIRTGROUP: 'root',
      MODULES: '',
    };
    const r = await runRc(['stop'], env);
    const all = r.stdout + r.stderr;
    expect(r.code, all).toBe(0);
    expect(all).toContain('libvirtd is not running and none of its guests runs: no guests to stop');
    expect(all).not.toMatch(/does not answer|rescue|error:/);
  });
});
