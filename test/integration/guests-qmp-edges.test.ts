// The ladder's hard cases on real QEMU guests (qmp driver, in-process): the
// save directory on a small tmpfs (guests that do not fit are planned for
// shutdown; saves that fail for want of space fall back to shutdown; none
// destroyed while time is left), a save still running at the deadline
// aborted before the destroy, and an interruption mid-save leaving no guest paused.
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DomainDriver, LifecycleEvent } from '../../src/domain/types.js';
import { stopGuests } from '../../src/rc/guest-steps.js';
import { onlyGuests, stepContext, testSettings } from '../helpers/guest-steps.js';
import { runCommand } from '../helpers/process.js';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { runRc } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';

const sig = (ms = 60_000): AbortSignal => AbortSignal.timeout(ms);
const NAMES = ['e a', 'e b', 'e c'];
const MiB = 1024 * 1024;

async function mountTmpfs(dir: string, mib: number): Promise<void> {
  const r = await runCommand('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0700`, 'rcl-test-save', dir]);
  if (r.code !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr}`);
}

async function unmount(dir: string): Promise<void> {
  const r = await runCommand('umount', [dir]);
  if (r.code !== 0 && !/not mounted/.test(r.stderr)) throw new Error(`umount ${dir}: ${r.stderr}`);
}

describe('the ladder on real QEMU guests', () => {
  let bed: QmpBed;
  let driver: DomainDriver;
  let mounted = false;
  const state = async (name: string): Promise<string> => (await driver.getGuest(name, { signal: sig() })).state;
  const ensureRunning = async (names: string[]): Promise<void> => {
    await Promise.all(names.map(async (n) => {
      const g = await driver.getGuest(n, { signal: sig() });
      if (g.state !== 'shutoff') return;
      // A restore continues the same boot (no new ready line); a fresh start prints one.
      if (g.hasSavedImage) await driver.start(n, { signal: sig() });
      else await bed.boot(driver, n);
    }));
  };

  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-guests-edge-', NAMES.map((name) => ({ name, fill: 96, memMiB: 192 })));
    driver = bed.driver();
    await Promise.all(NAMES.map((n) => bed.boot(driver, n)));
  }, 10 * 60_000);

  afterAll(async () => {
    try {
      if (mounted) await unmount(bed.saveDir);
    } finally {
      await bed?.cleanup();
    }
  });

  it('SIGTERM to `rc.libvirt stop` as the saves begin: summary printed, exit 1, no guest paused, none destroyed', async () => {
    let sent = false;
    const r = await runRc(['stop'], bed.env(), {
      onStdout: (all, kill) => {
        if (!sent && /^'e [abc]': save$/m.test(all)) {
          sent = true;
          kill('SIGTERM');
        }
      },
    });
    expect(sent, r.stdout + r.stderr).toBe(true);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toMatch(/SIGTERM received/);
    expect(r.stdout).toMatch(/^GUEST +ACTION +RESULT/m);
    expect(r.stdout).not.toMatch(/destroyed/);
    // Every guest either saved completely or runs again: none is left paused.
    for (const n of NAMES) {
      const g = await driver.getGuest(n, { signal: sig() });
      expect(g.state === 'running' || (g.state === 'shutoff' && g.hasSavedImage), `${n}: ${g.stateDetail}\n${r.stdout}`).toBe(true);
    }
    await ensureRunning(NAMES);
  });

  it('interrupted mid-save (SIGTERM): running saves are aborted, every guest runs, none paused, none destroyed', async () => {
    const slow = bed.driver({ saveBandwidth: 8 * MiB });
    const ac = new AbortController();
    const settings = await testSettings({ driver: 'qmp', guestsDir: bed.guestsDir, qemuSaveDir: bed.saveDir, timeout: 120 });
    const run = stepContext(settings, { signal: ac.signal });
    const sub = slow.onLifecycle((e) => {
      if (e.event === 'Suspended') setTimeout(() => ac.abort(new Error('interrupted by SIGTERM')), 500);
    });
    const r = await stopGuests(run.ctx, 'policy', { openDrivers: async () => [slow] });
    sub();
    expect(r.clean).toBe(false);
    expect(r.destroyed).toEqual([]);
    for (const o of r.outcomes!) expect(['failed', 'skipped']).toContain(o.result);
    expect(r.outcomes!.some((o) => /interrupted: save aborted, guest running as before|save aborted/.test(o.reason)), run.output()).toBe(true);
    for (const n of NAMES) expect(await state(n)).toBe('running');
    expect(readdirSync(bed.saveDir)).toEqual([]);
  });

  it('a save still running at the deadline is aborted, the guest resumed, and only then destroyed', async () => {
    const slow = bed.driver({ saveBandwidth: 4 * MiB });
    const events: LifecycleEvent[] = [];
    slow.onLifecycle((e) => events.push(e));
    const settings = await testSettings({ driver: 'qmp', guestsDir: bed.guestsDir, qemuSaveDir: bed.saveDir, timeout: 6 });
    const run = stepContext(settings);
    const r = await stopGuests(run.ctx, 'policy', { openDrivers: async () => [onlyGuests(slow, () => new Set(['e a']))] });
    const o = r.outcomes![0]!;
    expect(o.result, run.output()).toBe('destroyed');
    expect(o.action).toBe('save->destroy');
    expect(o.reason).toMatch(/still saving at its deadline \(6 s\); save job aborted/);
    expect(o.ms).toBeGreaterThanOrEqual(6000);
    const mine = events.filter((e) => e.name === 'e a').map((e) => e.event);
    // Paused for the save, resumed by the abort, and only then shut down by the destroy.
    expect(mine.indexOf('Suspended')).toBeGreaterThan(-1);
    expect(mine.lastIndexOf('Resumed'), mine.join(' ')).toBeGreaterThan(mine.indexOf('Suspended'));
    expect(mine.lastIndexOf('Shutdown'), mine.join(' ')).toBeGreaterThan(mine.lastIndexOf('Resumed'));
    expect(readdirSync(bed.saveDir)).toEqual([]);
    expect(await state('e a')).toBe('shutoff');
  });

  it('a small save directory: what does not fit is planned for shutdown; a save that fails for space falls back; none destroyed', async () => {
    await ensureRunning(NAMES);
    await mountTmpfs(bed.saveDir, 300);
    mounted = true;
    // The plan: 300 MiB less the margin holds one 192 MiB guest.
    const plan = await runRc(['plan', '--json'], bed.env());
    expect(plan.code, plan.stderr).toBe(0);
    const p = JSON.parse(plan.stdout) as { guests: { name: string; action: string; reasons: string[] }[] };
    expect(p.guests.filter((g) => g.action === 'save')).toHaveLength(1);
    const planned = p.guests.filter((g) => g.action === 'shutdown');
    expect(planned).toHaveLength(2);
    for (const g of planned) expect(g.reasons.join()).toMatch(/does not fit in/);
    // The saves themselves: a driver that under-reports memory makes the plan think all fit; the real images do not.
    await unmount(bed.saveDir);
    await mountTmpfs(bed.saveDir, 140);
    const liar = new Proxy(driver, {
      get(t, prop) {
        if (prop === 'listGuests') return async (o: { signal: AbortSignal }) => (await t.listGuests(o)).map((g) => ({ ...g, memoryKiB: 4096 }));
        const v: unknown = Reflect.get(t, prop, t);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const settings = await testSettings({ driver: 'qmp', guestsDir: bed.guestsDir, qemuSaveDir: bed.saveDir, timeout: 120 });
    const run = stepContext(settings);
    const r = await stopGuests(run.ctx, 'policy', { openDrivers: async () => [liar] });
    expect(r.destroyed, run.output()).toEqual([]);
    expect(r.failed).toEqual([]);
    const results = r.outcomes!.map((o) => `${o.action}:${o.result}`);
    expect(results, run.output()).toContain('save->shutdown:shutdown');
    for (const o of r.outcomes!) expect(['saved', 'shutdown']).toContain(o.result);
    for (const n of NAMES) expect(await state(n)).toBe('shutoff');
  });
});
