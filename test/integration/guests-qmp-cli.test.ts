// rc.libvirt stop / start / guests_shutdown with DRIVER=qmp on real QEMU test
// guests, through the built executable: every guest saved concurrently and
// restored to the same boot (names with spaces and leading dashes), paused
// ones paused, a guest's policy over the settings, order groups in sequence,
// a stubborn guest destroyed at its deadline and not before, and an image
// older than a running guest set aside at its shutdown, never restored.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DomainDriver } from '../../src/domain/types.js';
import { withQmp } from '../../src/qmp/qmp-client.js';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readConsole } from '../helpers/console.js';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { runRc } from '../helpers/rc-cli.js';
import { waitFor } from '../helpers/process.js';
import { requireTestbed } from '../helpers/testbed.js';

const sig = (ms = 60_000): AbortSignal => AbortSignal.timeout(ms);
const NAMES = ['q one', '-q dash', 'q paused', 'q first', 'q stubborn'];

describe('rc.libvirt with the qmp driver', () => {
  let bed: QmpBed;
  let driver: DomainDriver;
  const state = async (name: string): Promise<string> => (await driver.getGuest(name, { signal: sig() })).state;

  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-guests-cli-', [
      { name: 'q one', fill: 48 },
      { name: '-q dash', fill: 16 },
      { name: 'q paused' },
      { name: 'q first', policy: { order: 2, on_shutdown: 'shutdown' } },
      { name: 'q stubborn', stubborn: true },
    ]);
    driver = bed.driver();
    await Promise.all(NAMES.map((n) => bed.boot(driver, n)));
    await withQmp(join(bed.qmpRunDir, 'q paused.qmp'), { signal: sig() }, (q) => q.execute('stop', undefined, { signal: sig() }));
  }, 10 * 60_000);

  afterAll(async () => {
    await bed?.cleanup();
  });

  it('stop saves every guest concurrently (paused as paused); the policy of `q first` shuts it down first, alone', async () => {
    const r = await runRc(['stop'], bed.env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    for (const n of ['q one', '-q dash', 'q paused', 'q stubborn']) {
      expect(r.stdout).toMatch(new RegExp(`^'${n}' +save +saved`, 'm'));
    }
    expect(r.stdout).toMatch(/^'q first' +shutdown +shutdown +[\d.]+ +policy on_shutdown=shutdown/m);
    const firstDone = lines.findIndex((l) => /^'q first': shutdown.*\(\d+\.\d s\)$/.test(l));
    const otherStart = lines.findIndex((l) => l === "'q one': save" || l === "'-q dash': save");
    expect(firstDone, r.stdout).toBeGreaterThan(-1);
    expect(otherStart, r.stdout).toBeGreaterThan(firstDone);
    for (const n of NAMES) expect(await state(n)).toBe('shutoff');
  });

  let firstBootBefore: string | undefined;
  it('start restores each saved guest to the same boot, the paused one paused, and starts the one shut down', async () => {
    const boots = new Map(NAMES.map((n) => [n, bed.bootId(n)]));
    firstBootBefore = bed.bootId('q first');
    const r = await runRc(['start'], bed.env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const n of ['q one', '-q dash', 'q paused', 'q stubborn']) {
      expect(r.stdout).toMatch(new RegExp(`^'${n}' +restore +restored`, 'm'));
    }
    expect(r.stdout).toMatch(/^'q first' +start +started/m);
    expect(await state('q paused')).toBe('paused');
    for (const n of ['q one', '-q dash', 'q stubborn', 'q first']) expect(await state(n)).toBe('running');
    await withQmp(join(bed.qmpRunDir, 'q paused.qmp'), { signal: sig() }, (q) => q.execute('cont', undefined, { signal: sig() }));
    // A restore continues the same boot: no new ready line, the same boot id.
    for (const n of ['q one', '-q dash', 'q paused', 'q stubborn']) expect(bed.bootId(n)).toBe(boots.get(n));
    // A second start has nothing left to do.
    const again = await runRc(['start'], bed.env());
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('no guests to act on');
  });

  it('guests_reboot reboots every running guest at once and waits until each runs again', async () => {
    await waitFor('q first to be ready after its fresh start', () => bed.bootId('q first') !== firstBootBefore, { timeoutMs: 150_000, intervalMs: 250 });
    const before = new Map(NAMES.map((n) => [n, bed.bootId(n)]));
    const r = await runRc(['guests_reboot'], bed.env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const n of NAMES) expect(r.stdout).toMatch(new RegExp(`^'${n}' +reboot +rebooted`, 'm'));
    for (const n of NAMES) {
      await waitFor(`${n} to boot again`, () => bed.bootId(n) !== before.get(n), { timeoutMs: 150_000, intervalMs: 250 });
      expect(await state(n)).toBe('running');
    }
  });

  it('guests_shutdown: the stubborn guest is destroyed at its deadline and not before; the others shut down; exit 1; an older image beside a running guest is set aside, named', async () => {
    // `q first` was started afresh: wait for its ready line (a button pressed before it is lost).
    await waitFor('q first to be ready after its fresh start', () => bed.bootId('q first') !== firstBootBefore, { timeoutMs: 150_000, intervalMs: 250 });
    // An image older than the running `q one` (as one left beside a guest booted by hand would be).
    writeFileSync(join(bed.saveDir, 'q one.save'), 'an older image');
    const r = await runRc(['guests_shutdown', '--timeout', '20'], bed.env());
    const aside = readdirSync(bed.saveDir).filter((f) => f.startsWith('q one.save.stale-'));
    expect(aside, r.stdout + r.stderr).toHaveLength(1);
    expect(readdirSync(bed.saveDir)).not.toContain('q one.save');
    expect(readFileSync(join(bed.saveDir, aside[0]!), 'utf8')).toBe('an older image');
    expect(r.stderr).toContain(`${join(bed.saveDir, 'q one.save')} is older than the guest`);
    expect(r.stderr).toContain(join(bed.saveDir, aside[0]!));
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const m = /^'q stubborn' +shutdown->destroy +destroyed +([\d.]+) +did not shut down within 20 s/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(20);
    for (const n of ['q one', '-q dash', 'q paused', 'q first']) expect(r.stdout, r.stdout + r.stderr).toMatch(new RegExp(`^'${n}' +shutdown +shutdown`, 'm'));
    expect(r.stderr).toMatch(/destroyed at the timeout: 'q stubborn'/);
    expect(readConsole(bed.consoleOf('q stubborn'))).not.toContain('RCL-POWEROFF');
    expect(readConsole(bed.consoleOf('q one'))).toContain('RCL-POWEROFF');
    for (const n of NAMES) expect(await state(n)).toBe('shutoff');
  });

  it('start after it: `q one` boots afresh, its older image never restored (kept aside)', async () => {
    const before = bed.bootId('q one');
    const r = await runRc(['start'], bed.env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^'q one' +start +started/m);
    expect(r.stdout).not.toMatch(/^'q one' +restore/m);
    await waitFor('q one to boot afresh', () => bed.bootId('q one') !== before, { timeoutMs: 150_000, intervalMs: 250 });
    expect(readdirSync(bed.saveDir).filter((f) => f.startsWith('q one.save.stale-'))).toHaveLength(1);
  });
});
