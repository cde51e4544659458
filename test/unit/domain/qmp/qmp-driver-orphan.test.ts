// A guest whose definition broke while its QEMU ran is handled from its run
// directory (an orphan). Once that QEMU has exited, a wait for it to go off
// must say so: before, the wait failed on the broken definition over and over
// until the stop's deadline, and the guest, long off, was counted as failed.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestDefinitionError } from '../../../../src/domain/qmp/guest-definition.js';
import { createQmpDriver } from '../../../../src/domain/qmp/qmp-driver.js';
import type { DomainDriver } from '../../../../src/domain/types.js';

describe('QMP driver: a guest whose definition broke, once its QEMU has exited', () => {
  let dir: string;
  let driver: DomainDriver;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-qmporphan-'));
    mkdirSync(join(dir, 'guests'));
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    // A bad policy value: the definition cannot be loaded. No pidfile: no QEMU of it runs.
    writeFileSync(join(dir, 'guests', 'orphan.json'), JSON.stringify({ argv: ['qemu-system-x86_64'], policy: { on_shutdown: 'nap' } }));
    driver = createQmpDriver({ guestsDir: join(dir, 'guests'), runDir: join(dir, 'run'), saveDir: join(dir, 'save'), qemuTimeoutMs: 2000 });
  });
  afterEach(async () => {
    await driver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is off for a wait for shutoff, at once', async () => {
    expect(await driver.waitForState('orphan', ['shutoff'], { signal: AbortSignal.timeout(5000) })).toBe('shutoff');
  });

  it('still fails a wait for it to run, and a start, naming the definition', async () => {
    await expect(driver.waitForState('orphan', ['running'], { signal: AbortSignal.timeout(5000) })).rejects.toBeInstanceOf(GuestDefinitionError);
    await expect(driver.start('orphan', { signal: AbortSignal.timeout(5000) })).rejects.toThrow(/orphan\.json: policy\.on_shutdown/);
  });
});
