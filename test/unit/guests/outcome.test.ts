// The verdict of a batch: a guest handled despite a fault around it (a qmp
// guest whose definition broke while it ran) still makes the run fail.
import { describe, expect, it } from 'vitest';
import { isBadOutcome, judgeOutcomes, type GuestOutcome } from '../../../src/guests/outcome.js';
import type { Guest } from '../../../src/domain/types.js';

const guest = (name: string, problem?: string): Guest => ({
  id: name, name, uri: 'qmp:///g', state: 'running', stateDetail: 'running', memoryKiB: 1, persistent: true, autostart: false,
  hasSavedImage: false, policy: {}, saveBlockers: [], ...(problem === undefined ? {} : { problem }),
});
const outcome = (g: Guest, result: GuestOutcome['result']): GuestOutcome => ({ guest: g, action: 'shutdown', result, reason: '', ms: 1, stateBefore: 'running' });

describe('judgeOutcomes', () => {
  it('counts a guest with a problem as failed even when it shut down cleanly', () => {
    const ok = outcome(guest('a'), 'shutdown');
    const broken = outcome(guest('b', 'its definition is broken or gone: b.json: argv: must be a non-empty array of strings'), 'shutdown');
    expect(judgeOutcomes([ok])).toEqual({ clean: true, destroyed: [], failed: [] });
    expect(judgeOutcomes([ok, broken])).toEqual({ clean: false, destroyed: [], failed: ['b'] });
    expect(isBadOutcome(broken)).toBe(true);
    expect(isBadOutcome(ok)).toBe(false);
  });
});
