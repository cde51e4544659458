// The QMP driver on real QEMU with the test guest: every operation, save and
// restore continuing the same boot, paused guests restored paused, an
// interrupted save, a stubborn guest, concurrent saves, a QEMU left waiting to
// be restored (its image kept, never taken for one older than the guest).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DomainError, InterruptedError, NotReachableError, OperationRefusedError, TimedOutError } from '../../src/domain/errors.js';
import { createQmpDriver } from '../../src/domain/qmp/qmp-driver.js';
import { launchQemu, runtimePaths } from '../../src/domain/qmp/qemu-process.js';
import { connectQmp, withQmp } from '../../src/qmp/qmp-client.js';
import type { DomainDriver, LifecycleEvent, SaveProgress } from '../../src/domain/types.js';
import { createMemoryLog } from '../../src/util/log.js';
import { deadline } from '../../src/util/deadline.js';
import { consoleOffset, readConsole, waitForConsoleLine, waitForGuestReady } from '../helpers/console.js';
import { identifyPid, makeTempDir, runChecked, terminateProcess } from '../helpers/process.js';
import { initrdPath, kernelPath, requireTestbed } from '../helpers/testbed.js';

const READY_MS = 150_000;
const sig = (ms = 60_000): AbortSignal => AbortSignal.timeout(ms);

let root: string;
let guestsDir: string;
let runDir: string;
let saveDir: string;
let driver: DomainDriver;
const log = createMemoryLog();
const events: LifecycleEvent[] = [];

const consoleOf = (name: string): string => join(root, `${name}.console`);

async function defineGuest(name: string, opts: { fill?: number; stubborn?: boolean; memMiB?: number; policy?: object } = {}): Promise<void> {
  // no_timer_check: on a loaded host a TCG guest's kernel can fail its boot-time
  // timer check and panic ("IO-APIC + timer doesn't work").
  const append = ['console=ttyS0', 'quiet', 'no_timer_check'];
  if (opts.fill) append.push(`fill=${opts.fill}`);
  if (opts.stubborn) append.push('stubborn');
  const argv = [
    'qemu-system-x86_64', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', String(opts.memMiB ?? 192),
    '-kernel', kernelPath, '-initrd', initrdPath, '-append', append.join(' '),
    // append=on: a restored QEMU keeps adding to the same console log.
    '-chardev', `file,id=con0,path=${consoleOf(name)},append=on`, '-serial', 'chardev:con0',
  ];
  await writeFile(join(guestsDir, `${name}.json`), JSON.stringify({ argv, autostart: true, policy: opts.policy ?? { order: 1 } }));
}

function readyIds(name: string): string[] {
  return [...readConsole(consoleOf(name)).matchAll(/^RCL-READY boot=(\S+)/gm)].map((m) => m[1] ?? '');
}

async function startAndWaitReady(d: DomainDriver, name: string): Promise<string> {
  const from = consoleOffset(consoleOf(name));
  await d.start(name, { signal: sig() });
  return waitForGuestReady(consoleOf(name), { timeoutMs: READY_MS, fromOffset: from });
}

function pidOf(name: string): number | undefined {
  try {
    return Number(readFileSync(join(runDir, `${name}.pid`), 'utf8').trim());
  } catch {
    return undefined;
  }
}

const GUESTS = ['alpha', 'beta', 'gamma', 'mule'];

beforeAll(async () => {
  requireTestbed();
  root = await makeTempDir('rcl-qmpdrv-');
  guestsDir = join(root, 'guests');
  runDir = join(root, 'run');
  saveDir = join(root, 'save');
  await mkdir(guestsDir);
  await defineGuest('alpha', { fill: 64, policy: { order: 2, on_shutdown: 'managedsave', timeout: 60, on_boot: 'restore' } });
  await defineGuest('beta', { fill: 64 });
  await defineGuest('gamma', { fill: 32 });
  await defineGuest('mule', { stubborn: true, memMiB: 128 });
  driver = createQmpDriver({ guestsDir, runDir, saveDir, log, qemuTimeoutMs: 20_000 });
  driver.onLifecycle((e) => events.push(e));
  // Boot them all at once (TCG guests boot slowly; in parallel it is faster overall).
  await Promise.all(GUESTS.map((g) => startAndWaitReady(driver, g)));
});

afterAll(async () => {
  // By PID from the pidfiles, checked by identity; then the temp folder.
  for (const name of GUESTS) {
    await driver?.destroy(name, { signal: sig(30_000) }).catch(() => undefined);
    const pid = pidOf(name);
    const id = pid ? identifyPid(pid) : undefined;
    if (id && readFileSync(`/proc/${id.pid}/cmdline`, 'utf8').includes(join(runDir, `${name}.qmp`))) await terminateProcess(id, 5_000);
  }
  await driver?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('QMP driver on real QEMU', () => {
  it('lists every guest with state, memory, policy and its own private directories', async () => {
    const guests = await driver.listGuests({ signal: sig() });
    expect(guests.map((g) => g.id).sort()).toEqual([...GUESTS].sort());
    const alpha = guests.find((g) => g.id === 'alpha');
    expect(alpha).toMatchObject({
      name: 'alpha', state: 'running', stateDetail: 'running', memoryKiB: 192 * 1024, persistent: true, autostart: true,
      hasSavedImage: false, saveBlockers: [], policy: { order: 2, onShutdown: 'managedsave', timeout: 60, onBoot: 'restore' },
    });
    expect(alpha?.uri).toBe(`qmp://${guestsDir}`);
    for (const d of [runDir, saveDir]) expect(statSync(d).mode & 0o777).toBe(0o700);
    expect(events.filter((e) => e.event === 'Started').map((e) => e.name).sort()).toEqual([...GUESTS].sort());
  });

  it('refuses to start a guest that runs, and names unknown guests', async () => {
    await expect(driver.start('alpha', { signal: sig() })).rejects.toBeInstanceOf(OperationRefusedError);
    await expect(driver.getGuest('nosuch', { signal: sig() })).rejects.toMatchObject({ code: 'not-found' });
  });

  it('names what is wrong with a definition; QEMU refusing its argv is a clear error and leaves nothing running', async () => {
    const invalid = join(guestsDir, 'invalid.json');
    const broken = join(guestsDir, 'broken.json');
    await writeFile(invalid, JSON.stringify({ argv: ['qemu-system-x86_64'], policy: { on_shutdown: 'nap' } }));
    await writeFile(broken, JSON.stringify({ argv: ['qemu-system-x86_64', '-machine', 'none', '-bogus-option'] }));
    try {
      await expect(driver.getGuest('invalid', { signal: sig() })).rejects.toThrow(`${invalid}: policy.on_shutdown: must be one of`);
      const ids = (await driver.listGuests({ signal: sig() })).map((g) => g.id);
      expect(ids).not.toContain('invalid');
      expect(ids).toContain('broken');
      expect(log.lines.some((l) => l.level === 'error' && l.msg.includes('invalid.json'))).toBe(true);
      const err = await driver.start('broken', { signal: sig() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperationRefusedError);
      expect((err as Error).message).toMatch(/cannot start broken:.*bogus-option/);
      expect((await driver.getGuest('broken', { signal: sig() })).state).toBe('shutoff');
    } finally {
      await rm(invalid, { force: true });
      await rm(broken, { force: true });
    }
  });

  it('saves with progress, then restores the same boot (no second ready line)', async () => {
    const bootId = readyIds('alpha').at(-1);
    const progress: SaveProgress[] = [];
    await driver.save('alpha', { signal: sig(), onProgress: (p) => progress.push(p) });
    expect(progress.at(-1)?.fraction).toBe(1);
    expect(progress.every((p) => p.fraction >= 0 && p.fraction <= 1)).toBe(true);
    const saved = await driver.getGuest('alpha', { signal: sig() });
    expect(saved).toMatchObject({ state: 'shutoff', hasSavedImage: true });
    expect(existsSync(join(saveDir, 'alpha.save'))).toBe(true);
    expect(JSON.parse(readFileSync(join(saveDir, 'alpha.json'), 'utf8'))).toMatchObject({ wasRunning: true });
    expect(statSync(join(saveDir, 'alpha.save')).size).toBeGreaterThan(64 * 1024 * 1024);
    expect(readdirSync(saveDir).filter((f) => f.includes('partial'))).toEqual([]);

    await driver.start('alpha', { signal: sig() });
    const restored = await driver.getGuest('alpha', { signal: sig() });
    expect(restored).toMatchObject({ state: 'running', hasSavedImage: false });
    expect(existsSync(join(saveDir, 'alpha.json'))).toBe(false);
    // The same boot goes on: the power button reaches the guest that was saved.
    const from = consoleOffset(consoleOf('alpha'));
    await driver.shutdown('alpha', { signal: sig() });
    const m = await waitForConsoleLine(consoleOf('alpha'), /^RCL-POWEROFF boot=(\S+)/m, { timeoutMs: READY_MS, fromOffset: from });
    expect(m[1]).toBe(bootId);
    expect(readyIds('alpha')).toEqual([bootId]);
    expect(await driver.waitForState('alpha', ['shutoff'], { signal: sig() })).toBe('shutoff');
    // A plain start boots afresh.
    const newBoot = await startAndWaitReady(driver, 'alpha');
    expect(newBoot).not.toBe(bootId);
  });

  it('restores a paused guest paused', async () => {
    await withQmp(join(runDir, 'gamma.qmp'), { signal: sig() }, (q) => q.execute('stop', undefined, { signal: sig() }));
    expect((await driver.getGuest('gamma', { signal: sig() })).state).toBe('paused');
    await driver.save('gamma', { signal: sig() });
    expect(JSON.parse(readFileSync(join(saveDir, 'gamma.json'), 'utf8'))).toMatchObject({ wasRunning: false });
    await driver.start('gamma', { signal: sig() });
    expect(await driver.getGuest('gamma', { signal: sig() })).toMatchObject({ state: 'paused', hasSavedImage: false });
    await withQmp(join(runDir, 'gamma.qmp'), { signal: sig() }, (q) => q.execute('cont', undefined, { signal: sig() }));
    expect((await driver.getGuest('gamma', { signal: sig() })).state).toBe('running');
  });

  it('a save interrupted by its signal leaves the guest running and no partial file', async () => {
    // A throttled driver, so the migration is still running when we pull the plug.
    const slow = createQmpDriver({ guestsDir, runDir, saveDir, qemuTimeoutMs: 20_000, saveBandwidth: 16 * 1024 * 1024 });
    try {
      const ac = new AbortController();
      const p = slow.save('beta', {
        signal: ac.signal,
        onProgress: (pr) => {
          if (pr.fraction > 0 && pr.fraction < 1) ac.abort(new Error('operator pressed ^C'));
        },
      });
      await expect(p).rejects.toBeInstanceOf(InterruptedError);
      expect(ac.signal.aborted).toBe(true);
      expect(await slow.getGuest('beta', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
      expect(readdirSync(saveDir).filter((f) => f.startsWith('beta') || f.startsWith('.beta'))).toEqual([]);

      // abort(id) does the same to a save in flight.
      const started = new Promise<void>((resolve) => {
        const off = slow.onLifecycle((e) => {
          if (e.name === 'beta' && e.event === 'Suspended') {
            off();
            resolve();
          }
        });
      });
      const q = slow.save('beta', { signal: sig() });
      q.catch(() => undefined);
      await started;
      await slow.abort('beta', { signal: sig() });
      await expect(q).rejects.toBeInstanceOf(InterruptedError);
      expect(await slow.getGuest('beta', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
      expect(readdirSync(saveDir).filter((f) => f.includes('beta'))).toEqual([]);
    } finally {
      await slow.close();
    }
  });

  it('a save that fails mid-stream (disk full) resumes the guest and leaves no partial file', async () => {
    const small = join(root, 'small');
    await mkdir(small);
    await runChecked('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', small]);
    const full = createQmpDriver({ guestsDir, runDir, saveDir: small, qemuTimeoutMs: 20_000 });
    try {
      const err = await full.save('beta', { signal: sig() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperationRefusedError);
      expect((err as Error).message).toMatch(/ENOSPC|failed/);
      expect(await full.getGuest('beta', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
      expect(readdirSync(small)).toEqual([]);
    } finally {
      await full.close();
      await runChecked('umount', [small]);
    }
  });

  it('reboots: a reset and a new boot of the same QEMU', async () => {
    const before = readyIds('beta').at(-1);
    const from = consoleOffset(consoleOf('beta'));
    await driver.reboot('beta', { signal: sig() });
    expect((await driver.getGuest('beta', { signal: sig() })).state).toBe('running');
    const after = await waitForGuestReady(consoleOf('beta'), { timeoutMs: READY_MS, fromOffset: from });
    expect(after).not.toBe(before);
    expect(events.some((e) => e.name === 'beta' && e.event === 'Rebooted')).toBe(true);
  });

  it('a stubborn guest ignores shutdown; destroy stops it', async () => {
    const from = consoleOffset(consoleOf('mule'));
    await driver.shutdown('mule', { signal: sig() });
    await waitForConsoleLine(consoleOf('mule'), /^RCL-IGNORED/m, { timeoutMs: 60_000, fromOffset: from });
    const d = deadline(3000);
    await expect(driver.waitForState('mule', ['shutoff'], { signal: d.signal })).rejects.toBeInstanceOf(TimedOutError);
    expect((await driver.getGuest('mule', { signal: sig() })).state).toBe('running');
    // Another client holds the monitor (as libvirtd would): QEMU never greets us.
    const holder = await connectQmp(join(runDir, 'mule.qmp'), { signal: sig() });
    try {
      const quick = createQmpDriver({ guestsDir, runDir, saveDir, qemuTimeoutMs: 1500 });
      const held = await quick.getGuest('mule', { signal: sig() });
      await quick.close();
      expect(held.state).toBe('other');
      expect(held.stateDetail).toMatch(/no QMP greeting/);
      await expect(connectQmp(join(runDir, 'mule.qmp'), { signal: deadline(1000).signal })).rejects.toBeInstanceOf(NotReachableError);
      // destroy cannot send quit through the held monitor: it signals the checked pid.
      const pid = pidOf('mule');
      await driver.destroy('mule', { signal: sig() });
      expect(pid && identifyPid(pid)).toBeFalsy();
    } finally {
      await holder.close();
    }
    expect((await driver.getGuest('mule', { signal: sig() })).state).toBe('shutoff');
    await expect(driver.shutdown('mule', { signal: sig() })).rejects.toBeInstanceOf(OperationRefusedError);
    await driver.destroy('mule', { signal: sig() }); // nothing left to destroy: no error
  });

  it('saves three guests concurrently from one process, then restores them', async () => {
    const trio = ['alpha', 'beta', 'gamma'];
    const boots = Object.fromEntries(trio.map((g) => [g, readyIds(g).at(-1)]));
    await Promise.all(trio.map((g) => driver.save(g, { signal: sig(120_000) })));
    for (const g of await driver.listGuests({ signal: sig() })) {
      if (trio.includes(g.id)) expect(g).toMatchObject({ state: 'shutoff', hasSavedImage: true });
    }
    await Promise.all(trio.map((g) => driver.start(g, { signal: sig(120_000) })));
    for (const g of trio) {
      expect(await driver.getGuest(g, { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
      expect(readyIds(g).at(-1)).toBe(boots[g]);
    }
  });

  it('a truncated image fails the restore, keeps the image, and leaves no QEMU behind', async () => {
    await driver.save('gamma', { signal: sig() });
    const image = join(saveDir, 'gamma.save');
    const whole = join(root, 'gamma.whole');
    await copyFile(image, whole);
    await truncate(image, Math.floor(statSync(image).size / 2));
    await expect(driver.start('gamma', { signal: sig() })).rejects.toBeInstanceOf(DomainError);
    expect(await driver.getGuest('gamma', { signal: sig() })).toMatchObject({ state: 'shutoff', hasSavedImage: true });
    await copyFile(whole, image);
    await driver.start('gamma', { signal: sig() });
    expect(await driver.getGuest('gamma', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
  });

  it('a QEMU left waiting to be restored (inmigrate: a start killed mid-restore) keeps its image: not named older than the guest, not moved by shutdown or destroy; the next start restores the same boot', async () => {
    const boot = readyIds('gamma').at(-1);
    await driver.save('gamma', { signal: sig() });
    const image = join(saveDir, 'gamma.save');
    const saved = readFileSync(image);
    // As a start killed before it fed the image: QEMU launched to restore, the image not yet sent.
    const { argv } = JSON.parse(readFileSync(join(guestsDir, 'gamma.json'), 'utf8')) as { argv: string[] };
    await launchQemu(argv, 'gamma', runtimePaths(runDir, 'gamma'), { signal: sig(), timeoutMs: 20_000, incoming: true });
    const waiting = await driver.getGuest('gamma', { signal: sig() });
    expect(waiting).toMatchObject({ stateDetail: 'inmigrate', hasSavedImage: true });
    expect(waiting.staleImage).toBeUndefined();
    expect(waiting.problem).toBeUndefined();
    await driver.shutdown('gamma', { signal: sig() }).catch(() => undefined);
    await driver.destroy('gamma', { signal: sig() });
    expect(readdirSync(saveDir).filter((f) => f.startsWith('gamma.'))).toEqual(['gamma.json', 'gamma.save']);
    expect(readFileSync(image).equals(saved)).toBe(true);
    expect(log.lines.some((l) => l.msg.includes('is older than the guest'))).toBe(false);
    await driver.start('gamma', { signal: sig() });
    expect(await driver.getGuest('gamma', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
    expect(readyIds('gamma').at(-1)).toBe(boot);
  });

  it('any legal file name is a guest QEMU starts, saves and restores under that name (=, commas, spaces, quotes, $)', async () => {
    // -machine none: no kernel to boot, so this checks only how the name reaches QEMU.
    const names = ['web=1', 'a,b=c,,d', `my "guest" it's $HOME`, 'guest=x,process=y'];
    const argv = ['qemu-system-x86_64', '-machine', 'none', '-nodefaults', '-display', 'none'];
    for (const name of names) await writeFile(join(guestsDir, `${name}.json`), JSON.stringify({ argv }));
    try {
      for (const name of names) {
        await driver.start(name, { signal: sig() });
        expect(await driver.getGuest(name, { signal: sig() })).toMatchObject({ id: name, name, state: 'running' });
        await driver.save(name, { signal: sig() });
        expect(await driver.getGuest(name, { signal: sig() })).toMatchObject({ state: 'shutoff', hasSavedImage: true });
        await driver.start(name, { signal: sig() });
        expect(await driver.getGuest(name, { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
        const reply = await withQmp(join(runDir, `${name}.qmp`), { signal: sig() }, (q) => q.execute('query-name', undefined, { signal: sig() }));
        expect(reply).toEqual({ name });
        await driver.destroy(name, { signal: sig() });
      }
    } finally {
      for (const name of names) {
        await driver.destroy(name, { signal: sig(30_000) }).catch(() => undefined);
        await rm(join(guestsDir, `${name}.json`), { force: true });
      }
    }
  });

  it('refuses a symlink in place of its save directory', async () => {
    const target = join(root, 'elsewhere');
    await mkdir(target);
    const link = join(root, 'save-link');
    await symlink(target, link);
    const d = createQmpDriver({ guestsDir, runDir, saveDir: link });
    try {
      await expect(d.listGuests({ signal: sig() })).rejects.toThrow(/symbolic link/);
    } finally {
      await d.close();
    }
  });
});
