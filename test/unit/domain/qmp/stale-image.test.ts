// Which run states of a live QEMU make an image beside it older than the guest
// (src/domain/qmp/stale-image.ts). What the driver does with such an image, on a
// stand-in QEMU: test/unit/domain/qmp/qmp-save-faults.test.ts.
import { describe, expect, it } from 'vitest';
import { makesImageStale } from '../../../../src/domain/qmp/stale-image.js';

describe('the rule: which run states make an image beside the QEMU stale', () => {
  it('a QEMU that has run (running, paused, suspended, an error or shutdown state) makes it stale', () => {
    for (const s of ['running', 'paused', 'suspended', 'shutdown', 'guest-panicked', 'internal-error', 'io-error', 'watchdog']) {
      expect(makesImageStale(s, false), s).toBe(true);
    }
    expect(makesImageStale('running', true)).toBe(true);
  });

  it('a restore in progress, a QEMU that never ran, a save finishing and a restore waiting paused for its mark do not', () => {
    for (const s of ['inmigrate', 'prelaunch', 'postmigrate', 'finish-migrate', 'save-vm', 'restore-vm', '']) {
      expect(makesImageStale(s, false), s).toBe(false);
      expect(makesImageStale(s, true), s).toBe(false);
    }
    expect(makesImageStale('paused', true)).toBe(false);
  });
});
