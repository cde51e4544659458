// Faults around the qmp driver's files, on real QEMU test guests (no libvirtd):
// a save aborted right after QEMU said `completed` keeps its image and the
// guest comes back; a guest that stops right after the `cont` of its restore
// is cold-booted at the next start, its image kept aside, never restored
// again; a QEMU whose definition broke while it ran is found and shut down
// cleanly (rc.libvirt stop names the definition); a QEMU that drops
// privileges (-runas) is not saved, and `plan` names why.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQmpDriver } from '../../src/domain/qmp/qmp-driver.js';
import type { DomainDriver } from '../../src/domain/types.js';
import { createMemoryLog } from '../../src/util/log.js';
import { consoleOffset, waitForConsoleLine, waitForGuestReady } from '../helpers/console.js';
import { identifyPid } from '../helpers/process.js';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { runRc } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';

const sig = (ms = 60_000): AbortSignal => AbortSignal.timeout(ms);
const READY_MS = 150_000;

describe('qmp faults on real QEMU', () => {
  let bed: QmpBed;
  let driver: DomainDriver;
  const log = createMemoryLog();
  const pidOf = (name: string): number => Number(readFileSync(join(bed.qmpRunDir, `${name}.pid`), 'utf8').trim());
  const saveFiles = (name: string): string[] => readdirSync(bed.saveDir).filter((f) => f.startsWith(`${name}.`) || f.startsWith(`.${name}.`)).sort();

  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-fault-qmp-', [
      { name: 'keep', fill: 24, memMiB: 128 },
      { name: 'orphan', memMiB: 128 },
      { name: 'runas', memMiB: 128, extraArgv: ['-runas', 'nobody'] },
    ]);
    driver = createQmpDriver({ guestsDir: bed.guestsDir, runDir: bed.qmpRunDir, saveDir: bed.saveDir, qemuTimeoutMs: 20_000, log });
    await Promise.all(['keep', 'orphan', 'runas'].map((n) => bed.boot(driver, n)));
  }, 10 * 60_000);

  afterAll(async () => {
    await driver?.close();
    await bed?.cleanup();
  });

  it('a save aborted right after `completed` keeps its image, QEMU quit; the next start restores the same boot', async () => {
    const bootId = bed.bootId('keep');
    const ac = new AbortController();
    let abortedAtEnd = false;
    // The fraction 1 is reported when QEMU said `completed`, before the stream is drained, fsynced and renamed.
    await driver.save('keep', {
      signal: ac.signal,
      onProgress: (p) => {
        if (p.fraction === 1 && !ac.signal.aborted) {
          ac.abort(new Error('SIGTERM'));
          abortedAtEnd = true;
        }
      },
    });
    expect(abortedAtEnd).toBe(true);
    expect(await driver.getGuest('keep', { signal: sig() })).toMatchObject({ state: 'shutoff', hasSavedImage: true });
    expect(saveFiles('keep')).toEqual(['keep.json', 'keep.save']);
    await driver.start('keep', { signal: sig() });
    expect(await driver.getGuest('keep', { signal: sig() })).toMatchObject({ state: 'running', hasSavedImage: false });
    expect(saveFiles('keep')).toEqual([]);
    // The same boot goes on: no new ready line.
    expect(bed.bootId('keep')).toBe(bootId);
  });

  it('a guest that stops right after the `cont` of its restore is cold-booted at the next start; its image is kept aside, not restored again', async () => {
    await driver.save('keep', { signal: sig() });
    const bootId = bed.bootId('keep');
    let killed: number | undefined;
    const crashing = createQmpDriver({
      guestsDir: bed.guestsDir, runDir: bed.qmpRunDir, saveDir: bed.saveDir, qemuTimeoutMs: 20_000, log,
      hooks: {
        // The guest has been let run from the image: it dies there (a crash of the host would leave the same files).
        afterCont: async (name) => {
          expect(existsSync(join(bed.saveDir, `${name}.save.restoring`))).toBe(true);
          expect(existsSync(join(bed.saveDir, `${name}.save`))).toBe(false);
          const id = identifyPid(pidOf(name));
          if (id) process.kill(id.pid, 'SIGKILL');
          killed = id?.pid;
        },
      },
    });
    try {
      await expect(crashing.start('keep', { signal: sig() })).rejects.toThrow();
    } finally {
      await crashing.close();
    }
    expect(killed).toBeGreaterThan(0);
    expect(saveFiles('keep')).toEqual(['keep.json', 'keep.save.restoring']);
    expect(await driver.getGuest('keep', { signal: sig() })).toMatchObject({ state: 'shutoff', hasSavedImage: false });

    const from = consoleOffset(bed.consoleOf('keep'));
    await driver.start('keep', { signal: sig() });
    const newBoot = await waitForGuestReady(bed.consoleOf('keep'), { timeoutMs: READY_MS, fromOffset: from });
    expect(newBoot).not.toBe(bootId);
    const files = saveFiles('keep');
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^keep\.save\.used-\d{4}-/);
    expect(log.lines.some((l) => l.level === 'error' && l.msg.includes('keep.save.restoring') && l.msg.includes(files[0] ?? '?'))).toBe(true);
  });

  it('a QEMU that drops privileges (-runas nobody) is not saved: plan names why, save refuses', async () => {
    const status = readFileSync(`/proc/${pidOf('runas')}/status`, 'utf8');
    expect(status).toMatch(/^Uid:\s+65534\b/m);
    const g = await driver.getGuest('runas', { signal: sig() });
    expect(g.saveBlockers.join(' ')).toContain('-runas nobody');
    const r = await runRc(['plan'], bed.env());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/runas.*shutdown.*-runas nobody/);
    await expect(driver.save('runas', { signal: sig() })).rejects.toThrow(/cannot save runas: .*-runas nobody/);
    expect(g.state).toBe('running');
  });

  it('a QEMU whose definition broke while it ran is found at stop and shut down cleanly; the run names the definition and fails', async () => {
    const def = join(bed.guestsDir, 'orphan.json');
    await writeFile(def, '{"argv": ["qemu-system-x86_64"], "policy": {"on_shutdown": "nap"}}');
    const g = await driver.getGuest('orphan', { signal: sig() });
    expect(g.state).toBe('running');
    expect(g.saveBlockers.join(' ')).toContain('orphan.json: policy.on_shutdown');
    const from = consoleOffset(bed.consoleOf('orphan'));
    const fromRunas = consoleOffset(bed.consoleOf('runas'));
    const r = await runRc(['stop'], bed.env({ TIMEOUT: '120' }));
    expect(r.stdout + r.stderr).toContain('orphan.json: policy.on_shutdown');
    expect(r.stdout).toMatch(/^'?orphan'? +shutdown +shutdown +[\d.]+ +cannot be saved \(its definition is broken or gone \(.*orphan\.json: policy\.on_shutdown/m);
    expect(r.stdout).toMatch(/^'?runas'? +shutdown +shutdown +[\d.]+ +cannot be saved \(drops privileges \(-runas nobody\)/m);
    expect(r.stdout).toMatch(/^'?keep'? +save +saved/m);
    await waitForConsoleLine(bed.consoleOf('orphan'), /^RCL-POWEROFF/m, { timeoutMs: READY_MS, fromOffset: from });
    // Off, with its definition still broken: a wait for that says so at once.
    expect(await driver.waitForState('orphan', ['shutoff'], { signal: sig() })).toBe('shutoff');
    await waitForConsoleLine(bed.consoleOf('runas'), /^RCL-POWEROFF/m, { timeoutMs: READY_MS, fromOffset: fromRunas });
    expect((await driver.getGuest('orphan', { signal: sig() }).catch(() => undefined))?.state ?? 'shutoff').toBe('shutoff');
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
  });
});
