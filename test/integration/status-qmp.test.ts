// rc.libvirt status --driver qmp on one real plain-QEMU test guest, through the
// built executable: the qmp guests (state, saved image) and the guests pending
// restore, never the libvirt daemons; exit 0 while a guest runs, 3 once none does;
// an image older than the running guest named by status and plan, left in place.
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { runRc } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';

interface JsonStatus {
  driver: string;
  qmp: unknown;
  daemons: unknown[];
  libvirtd: unknown;
  guests: { name: string; state: string; savedImage: boolean; staleImage?: string }[];
  guestErrors: string[];
  pending: { name: string; action: string }[];
}

describe('rc.libvirt status with the qmp driver', () => {
  let bed: QmpBed;
  // DRIVER=libvirt in the environment: the option must win over it.
  const env = (): NodeJS.ProcessEnv => bed.env({ DRIVER: 'libvirt' });

  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-status-qmp-', [{ name: 'st one', memMiB: 128 }]);
    await bed.boot(bed.driver(), 'st one');
  }, 5 * 60_000);

  afterAll(async () => {
    await bed?.cleanup();
  });

  it('shows the running qmp guest, not the libvirt daemons, and exits 0', async () => {
    const r = await runRc(['status', '--driver', 'qmp'], env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`driver qmp: guests run under QEMU directly, defined in ${bed.guestsDir}; the libvirt daemons are not used`);
    expect(r.stdout).not.toMatch(/^(virtlockd|virtlogd|libvirtd) /m);
    expect(r.stdout).toMatch(/^ {2}st one {2}running$/m);

    const j = await runRc(['status', '--driver', 'qmp', '--json'], env());
    expect(j.code, j.stderr).toBe(0);
    const s = JSON.parse(j.stdout) as JsonStatus;
    expect(s.driver).toBe('qmp');
    expect(s.qmp).toEqual({ guestsDir: bed.guestsDir, exists: true });
    expect(s.daemons).toEqual([]);
    expect(s.libvirtd).toBeNull();
    expect(s.guestErrors).toEqual([]);
    expect(s.guests).toEqual([expect.objectContaining({ name: 'st one', state: 'running', savedImage: false })]);
    expect(s.pending).toEqual([]);
  });

  it('an older image beside the running guest: status and plan name it, and move nothing', async () => {
    const image = join(bed.saveDir, 'st one.save');
    writeFileSync(image, 'an older image');
    try {
      const r = await runRc(['status', '--driver', 'qmp'], env());
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`  st one  running  [${image} is older than the running guest: never restored]`);
      const j = await runRc(['status', '--driver', 'qmp', '--json'], env());
      expect((JSON.parse(j.stdout) as JsonStatus).guests).toEqual([expect.objectContaining({ name: 'st one', state: 'running', savedImage: true, staleImage: image })]);
      const p = await runRc(['plan', '--driver', 'qmp'], env());
      expect(p.stdout + p.stderr).toContain(`${image} is older than the running guest: never restored`);
      expect(readdirSync(bed.saveDir)).toEqual(['st one.save']);
    } finally {
      rmSync(image, { force: true });
    }
  });

  it('after stop: the guest is shut off with its saved image and pending restore, and status exits 3', async () => {
    const stop = await runRc(['stop', '--driver', 'qmp'], env());
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);

    const r = await runRc(['status', '--driver', 'qmp'], env());
    expect(r.code, r.stdout + r.stderr).toBe(3);
    // Plain "shut off": a missing pidfile is how a stopped qmp guest looks, nothing to alarm anyone.
    expect(r.stdout).toMatch(/^ {2}st one {2}shut off {2}\(saved image\)$/m);
    expect(r.stdout).toMatch(/^waiting to be restored at the next start:\n {2}st one {2}\(saved; was running\)/m);

    const j = await runRc(['status', '--driver', 'qmp', '--json'], env());
    expect(j.code, j.stderr).toBe(3);
    const s = JSON.parse(j.stdout) as JsonStatus;
    expect(s.guests).toEqual([expect.objectContaining({ name: 'st one', state: 'shutoff', savedImage: true })]);
    expect(s.pending).toEqual([expect.objectContaining({ name: 'st one', action: 'saved' })]);
  });
});
