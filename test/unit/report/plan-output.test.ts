import { describe, expect, it } from 'vitest';
import type { Guest } from '../../../src/domain/types.js';
import { decidePlan, MARGIN_BYTES } from '../../../src/guests/plan.js';
import { formatPlan, planToJson } from '../../../src/report/plan-output.js';
import { libvirtLikeDriver } from '../../fakes/libvirt-like-driver.js';

describe('plan output', () => {
  it('prints a table by order, the save directory and the JSON for scripts', async () => {
    const d = libvirtLikeDriver([
      { name: 'db', memoryKiB: 1024 * 1024, policy: { order: 2, timeout: 120 } },
      { name: 'mail server', state: 'paused', memoryKiB: 256 * 1024 },
      { name: '-gpu', saveBlockers: ['host device 0000:01:00.0'] },
      { name: 'stuck', memoryKiB: 128 * 1024, undescribed: { missing: ['policy', 'saveBlockers'], problems: ['dumpxml: no answer within 15.0 s'] } },
    ]);
    const guests: Guest[] = await d.listGuests({ signal: new AbortController().signal });
    const plan = { ...decidePlan(guests.map((guest) => ({ guest, driver: d })), { onShutdown: 'managedsave', timeout: 300 }, 'policy', new Map([['/fake/save', { freeBytes: MARGIN_BYTES + 600 * 1024 * 1024, totalBytes: 0 }]])), unreachable: [{ uri: 'qemu+ssh://far/system', error: 'no answer', hung: false }] };
    const text = formatPlan(plan);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^ORDER +GUEST +STATE +MEMORY +ACTION +TIMEOUT +WHY$/);
    expect(lines[1]).toMatch(/^2 +db +running +1\.0 GiB +shutdown +120 s +does not fit/);
    expect(text).toMatch(/'-gpu' +running +256 MiB +shutdown +300 s +cannot be saved \(host device 0000:01:00\.0\)/);
    expect(text).toMatch(/'mail server' +paused +256 MiB +save +300 s +paused: saved as paused/);
    expect(text).toContain('save directory /fake/save: 664 MiB free, 384 MiB planned, 64 MiB kept free');
    expect(text).toContain('connection qemu+ssh://far/system: not reachable (no answer)');
    expect(text).toMatch(/stuck +running +128 MiB +save +300 s +not described in time \(dumpxml: no answer within 15\.0 s\); policy unknown: the settings' defaults; save blockers unknown: the save is tried/);
    const json = planToJson(plan) as { guests: { name: string; action: string; order: number; reasons: string[]; undescribed: unknown }[] };
    expect(json.guests.map((g) => [g.name, g.action, g.order])).toEqual([['db', 'shutdown', 2], ['mail server', 'save', 0], ['-gpu', 'shutdown', 0], ['stuck', 'save', 0]]);
    expect(json.guests.map((g) => g.undescribed)).toEqual([null, null, null, { missing: ['policy', 'saveBlockers'], problems: ['dumpxml: no answer within 15.0 s'] }]);
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
    expect(text).toContain('at stop: order groups 2, 0 one after another; a guest still active at its timeout is destroyed');
  });

  it('says "no active guests" only when every connection answered, and names no order groups it does not have', () => {
    const empty = { mode: 'policy' as const, guests: [], space: [], unreachable: [] };
    expect(formatPlan(empty)).toBe('no active guests');
    const down = formatPlan({ ...empty, unreachable: [{ uri: 'qemu:///system', error: 'failed to connect to the hypervisor', hung: true }] });
    expect(down).toContain('no active guests on the connections that answered');
    expect(down).toContain('connection qemu:///system: not reachable (failed to connect to the hypervisor)');
  });

  it('one order group: no "order groups ... one after another"', async () => {
    const d = libvirtLikeDriver([{ name: 'web' }, { name: 'db' }]);
    const guests: Guest[] = await d.listGuests({ signal: new AbortController().signal });
    const plan = { ...decidePlan(guests.map((guest) => ({ guest, driver: d })), { onShutdown: 'managedsave', timeout: 300 }, 'policy', new Map([['/fake/save', { freeBytes: 10 * 1024 ** 3, totalBytes: 0 }]])), unreachable: [] };
    const text = formatPlan(plan);
    expect(text).toContain('at stop: a guest still active at its timeout is destroyed (a running save is aborted first)');
    expect(text).not.toContain('order groups');
  });
});
