import { describe, expect, it, vi } from 'vitest';
import { fakeClock } from '../../fakes/clock.js';
import { qmpLikeDriver } from '../../fakes/qmp-like-driver.js';
import type { DomainDriver, Guest } from '../../../src/domain/types.js';
import { buildStopPlan, decidePlan, FIRST_PING_MS, HUNG_WINDOW_MS, LIST_TIMEOUT_MS, MARGIN_BYTES, PING_RETRY_MS, undescribedNote, type GuestPlan } from '../../../src/guests/plan.js';
import { createMemoryLog } from '../../../src/util/log.js';
import { libvirtLikeDriver, type FakeGuest } from '../../fakes/libvirt-like-driver.js';
import { estimateSaveQueue, PLAN_SAVE_RATE_BYTES_PER_S } from '../../../src/guests/save-slots.js';
import { formatPlan, planToJson } from '../../../src/report/plan-output.js';

const MiB = 1024 * 1024;

async function plan(list: FakeGuest[], opts: { free?: number; total?: number; error?: string; mode?: 'policy' | 'shutdown'; canResume?: boolean; onShutdown?: 'managedsave' | 'shutdown' | 'destroy' } = {}) {
  const d = libvirtLikeDriver(list, { canResume: opts.canResume ?? true });
  const items: { guest: Guest; driver: DomainDriver }[] = (await d.listGuests({ signal: new AbortController().signal })).map((guest) => ({ guest, driver: d }));
  const fs = opts.error ? { error: opts.error } : { freeBytes: opts.free ?? 1e12, totalBytes: opts.total ?? 0 };
  return decidePlan(items, { onShutdown: opts.onShutdown ?? 'managedsave', timeout: 300 }, opts.mode ?? 'policy', new Map([['/fake/save', fs]]));
}

function of(p: { guests: GuestPlan[] }, name: string): GuestPlan {
  const g = p.guests.find((x) => x.guest.name === name);
  if (!g) throw new Error(`no plan for ${name}`);
  return g;
}

describe('decidePlan', () => {
  it('names a qmp image older than its running guest, and plans the guest as any other', async () => {
    const d = qmpLikeDriver([{ name: 'q', hasSavedImage: true }, { name: 'clean' }]);
    const items = (await d.listGuests({ signal: new AbortController().signal })).map((guest) => ({ guest, driver: d as DomainDriver }));
    const p = decidePlan(items, { onShutdown: 'managedsave', timeout: 300 }, 'policy', new Map([['/fake/save', { freeBytes: 1e12, totalBytes: 0 }]]));
    expect(of(p, 'q').action).toBe('save');
    expect(of(p, 'q').reasons.join()).toContain('/fake/save/q.save is older than the running guest: never restored');
    expect(of(p, 'clean').reasons.join()).not.toContain('older');
  });

  it('plans a save for running guests and skips inactive ones', async () => {
    const p = await plan([{ name: 'a' }, { name: 'off', state: 'shutoff' }]);
    expect(p.guests.map((g) => [g.guest.name, g.action, g.timeout, g.order])).toEqual([['a', 'save', 300, 0]]);
  });

  it('plans a shutdown, with the reason, for a guest with save blockers or a transient one', async () => {
    const p = await plan([{ name: 'gpu', saveBlockers: ['host device 0000:01:00.0'] }, { name: 'tmp', persistent: false }]);
    expect(of(p, 'gpu').action).toBe('shutdown');
    expect(of(p, 'gpu').reasons.join()).toContain('0000:01:00.0');
    expect(of(p, 'tmp').action).toBe('shutdown');
    expect(of(p, 'tmp').reasons.join()).toContain('transient');
  });

  it('fills the save directory greedily, smallest first, keeping a margin', async () => {
    const free = MARGIN_BYTES + 700 * MiB;
    const p = await plan([
      { name: 'big', memoryKiB: 600 * 1024 },
      { name: 'small', memoryKiB: 256 * 1024 },
      { name: 'mid', memoryKiB: 400 * 1024 },
    ], { free });
    expect(of(p, 'small').action).toBe('save');
    expect(of(p, 'mid').action).toBe('save');
    expect(of(p, 'big').action).toBe('shutdown');
    expect(of(p, 'big').reasons.join()).toMatch(/does not fit in \/fake\/save/);
    expect(p.space[0]!.plannedBytes).toBe(656 * MiB);
  });

  it('plans a shutdown for every guest when the save directory cannot be measured', async () => {
    const p = await plan([{ name: 'a' }], { error: '/fake/save: EIO' });
    expect(of(p, 'a').action).toBe('shutdown');
    expect(of(p, 'a').reasons.join()).toContain('EIO');
  });

  it('lets the guest policy override the settings, and shutdown mode override both', async () => {
    const list: FakeGuest[] = [{ name: 'db', policy: { onShutdown: 'shutdown', timeout: 120, order: 2 } }, { name: 'x', policy: { onShutdown: 'destroy' } }];
    const p = await plan(list);
    expect([of(p, 'db').action, of(p, 'db').timeout, of(p, 'db').order]).toEqual(['shutdown', 120, 2]);
    expect(of(p, 'x').action).toBe('destroy');
    const s = await plan(list, { mode: 'shutdown' });
    expect(s.guests.map((g) => g.action)).toEqual(['shutdown', 'shutdown']);
    const d = await plan([{ name: 'y' }], { onShutdown: 'shutdown' });
    expect(of(d, 'y').action).toBe('shutdown');
  });

  it('saves paused guests as paused, and resumes a paused guest planned for shutdown', async () => {
    const p = await plan([{ name: 'p', state: 'paused' }, { name: 'q', state: 'paused', policy: { onShutdown: 'shutdown' } }]);
    expect(of(p, 'p').action).toBe('save');
    expect(of(p, 'p').resumeFirst).toBe(false);
    expect(of(p, 'q').resumeFirst).toBe(true);
    const n = await plan([{ name: 'q', state: 'paused', policy: { onShutdown: 'shutdown' } }], { canResume: false });
    expect(of(n, 'q').reasons.join()).toContain('destroyed at its deadline if it does not');
  });
});

describe('buildStopPlan: connections that do not answer', () => {
  fakeClock();
  const settings = { onShutdown: 'managedsave' as const, timeout: 300 };

  it('a libvirtd that answers nothing (no ping, no call of the listing) for the whole window is hung: its listing is called off, the evidence logged', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }], { uri: 'qemu:///system', connection: { pingMs: 'never', listHangs: true } });
    const log = createMemoryLog();
    const p = buildStopPlan([d], settings, 'shutdown', new AbortController().signal, log);
    await vi.advanceTimersByTimeAsync(HUNG_WINDOW_MS - 1);
    let done = false;
    void p.then(() => (done = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const plan = await p;
    expect(plan.guests).toEqual([]);
    const pings = Math.floor((HUNG_WINDOW_MS - 1) / PING_RETRY_MS) + 1;
    expect(plan.unreachable).toEqual([{ uri: 'qemu:///system', error: `no answer within ${HUNG_WINDOW_MS / 1000} s (${pings} pings asked, no call of the listing answered)`, hung: true, evidence: expect.any(Array) as unknown }]);
    // Pings retried within the window.
    expect(d.calls.filter((c) => c.op === 'ping')).toHaveLength(pings);
    const logged = log.lines.find((l) => l.level === 'error' && l.msg.includes('counted as hung'));
    expect(logged?.msg).toMatch(/\+1\.0 s: ping 1 asked; \+5\.0 s: ping 2 asked; .*nothing answered within 20 s/);
  });

  it('libvirtd down: the listing fails at once and sends the first ping at once, whose refusal is the verdict (hung, for the rescue path)', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }], { uri: 'qemu:///system', connection: { pingFails: 'failed to connect socket' } });
    const p = buildStopPlan([d], settings, 'shutdown', new AbortController().signal);
    await vi.advanceTimersByTimeAsync(0);
    const plan = await p;
    expect(plan.unreachable).toMatchObject([{ uri: 'qemu:///system', error: 'failed to connect socket', hung: true }]);
    expect(d.calls.filter((c) => c.op === 'ping')).toHaveLength(1);
  });

  it('a ping that never answers does not cut a listing that makes progress: not hung, every guest listed, the slowness logged', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }, { name: 'b' }], { uri: 'qemu:///system', connection: { pingMs: 'never', listAnswerMs: PING_RETRY_MS + 1, listMs: HUNG_WINDOW_MS * 2 } });
    const log = createMemoryLog();
    const p = buildStopPlan([d], settings, 'policy', new AbortController().signal, log);
    await vi.advanceTimersByTimeAsync(HUNG_WINDOW_MS * 2);
    const plan = await p;
    expect(plan.unreachable).toEqual([]);
    expect(plan.guests.map((g) => [g.guest.name, g.action])).toEqual([['a', 'save'], ['b', 'save']]);
    // Once the listing answered, no further ping was asked.
    expect(d.calls.filter((c) => c.op === 'ping')).toHaveLength(2);
    expect(log.lines.some((l) => l.level === 'warn' && /slow to answer its ping, but not hung: .*list answered/.test(l.msg))).toBe(true);
  });

  it('a listing that answers before the ping would go out: no ping is asked at all', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }], { uri: 'qemu:///system' });
    const p = buildStopPlan([d], settings, 'policy', new AbortController().signal);
    await vi.advanceTimersByTimeAsync(PING_RETRY_MS * 2);
    const plan = await p;
    expect(plan.guests.map((g) => g.guest.name)).toEqual(['a']);
    expect(d.calls.filter((c) => c.op === 'ping')).toEqual([]);
  });

  it('a ping that answers after 15 s, with a listing that hangs, is not hung: the listing is given up after LIST_TIMEOUT_MS (libvirtd is not ended for it)', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }], { uri: 'qemu:///system', connection: { pingMs: 15_000, listHangs: true } });
    const p = buildStopPlan([d], settings, 'shutdown', new AbortController().signal);
    await vi.advanceTimersByTimeAsync(LIST_TIMEOUT_MS);
    const plan = await p;
    expect(plan.unreachable).toEqual([{ uri: 'qemu:///system', error: `no list of guests within ${LIST_TIMEOUT_MS / 1000} s`, hung: false }]);
  });

  it('lists a slow libvirtd once it answers, and a qmp connection without any ping; a failing listing is reported', async () => {
    const slow = libvirtLikeDriver([{ name: 'a' }], { uri: 'qemu:///system', connection: { pingMs: 4000, listAnswerMs: 4000, listMs: 4000 } });
    const qmp = qmpLikeDriver([{ name: 'q' }]);
    const broken = qmpLikeDriver([{ name: 'r' }], { uri: 'qmp:///broken', connection: { listFails: 'EACCES: /etc/qemu/guests' } });
    const p = buildStopPlan([slow, qmp, broken], settings, 'shutdown', new AbortController().signal);
    await vi.advanceTimersByTimeAsync(4000);
    const plan = await p;
    expect(plan.guests.map((g) => g.guest.name).sort()).toEqual(['a', 'q']);
    expect(plan.unreachable).toEqual([{ uri: 'qmp:///broken', error: 'EACCES: /etc/qemu/guests', hung: false }]);
    expect(slow.calls.map((c) => c.op)).toEqual(['ping']);
  });
});

describe('decidePlan: the save queue at the planned save rate', () => {
  const GiB = 1024 * MiB;
  async function queued(parallel: number, timeout: number, sizesMiB: number[]) {
    const d = libvirtLikeDriver(sizesMiB.map((m, i) => ({ name: `g${i}`, memoryKiB: m * 1024 })));
    const items = (await d.listGuests({ signal: new AbortController().signal })).map((guest) => ({ guest, driver: d as DomainDriver }));
    return decidePlan(items, { onShutdown: 'managedsave', timeout, parallel }, 'policy', new Map([['/fake/save', { freeBytes: 1e13, totalBytes: 0 }]]));
  }

  it('warns when PARALLEL queues saves past the shutdown reserve, naming the guests that would be shut down instead', async () => {
    // 1 GiB at 50 MiB/s is 20.5 s; timeout 30 s keeps 15 s for a shutdown: the second and third get no slot before 15 s.
    expect(PLAN_SAVE_RATE_BYTES_PER_S).toBe(50 * MiB);
    const p = await queued(1, 30, [1024, 1024, 1024]);
    expect(p.guests.map((g) => g.action)).toEqual(['save', 'save', 'save']);
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings![0]).toMatch(/^order group 0: at 50 MiB\/s per save and PARALLEL=1, its 3 saves need about 20 s.*2 may get no save slot in time \(shut down instead\)/);
    expect(p.guests[0]!.reasons).toEqual([]);
    expect(p.guests[1]!.reasons.join()).toMatch(/a save slot may come only 20 s into its group, less than 15 s before its timeout of 30 s/);
    const json = planToJson({ ...p, unreachable: [] }) as { warnings: string[] };
    expect(json.warnings).toEqual(p.warnings);
    expect(formatPlan({ ...p, unreachable: [] })).toContain(`warning: ${p.warnings![0]}`);
  });

  it('warns when one save alone cannot end within its timeout, whatever PARALLEL', async () => {
    const p = await queued(0, 10, [2048]);
    expect(p.warnings![0]).toMatch(/1 may still be saving at the timeout \(aborted, destroyed\)/);
    expect(p.guests[0]!.reasons.join()).toMatch(/may end 41 s into its group, after its timeout of 10 s/);
  });

  it('no warning when the queue fits', async () => {
    const p = await queued(2, 300, [1024, 1024, 1024, 1024]);
    expect(p.warnings).toEqual([]);
    expect(estimateSaveQueue([{ name: 'a', memoryBytes: GiB, timeoutS: 300 }], 1)).toEqual([{ startS: 0, endS: 20.48, fate: 'in-time' }]);
  });
});

describe('guests the listing could not describe in time', () => {
  const undescribed = (missing: NonNullable<Guest['undescribed']>['missing'], problems = ['dumpxml: no answer within 15 s']): Guest['undescribed'] => ({ missing, problems });

  it('no policy or save blockers known: the settings\' defaults, and the save is tried', async () => {
    const p = await plan([{ name: 'x', undescribed: undescribed(['policy', 'saveBlockers']) }, { name: 'ok' }]);
    expect([of(p, 'x').action, of(p, 'x').timeout, of(p, 'x').order]).toEqual(['save', 300, 0]);
    expect(of(p, 'x').reasons).toEqual([
      'not described in time (dumpxml: no answer within 15 s)',
      "policy unknown: the settings' defaults",
      'save blockers unknown: the save is tried (shut down if it fails)',
    ]);
    expect(of(p, 'ok').reasons).toEqual([]);
    expect(undescribedNote(p)).toBe("not described in time, handled with safe defaults: 'x': save with defaults for policy, saveBlockers (dumpxml: no answer within 15 s)");
  });

  it('state unknown: shut down first, not saved; memory unknown: shut down (it cannot be counted against the save directory)', async () => {
    const p = await plan([
      { name: 's', state: 'other', undescribed: undescribed(['state', 'policy', 'saveBlockers'], ['domstate: no answer within 15 s']) },
      { name: 'm', undescribed: undescribed(['memory', 'policy', 'saveBlockers']) },
    ]);
    expect(of(p, 's').action).toBe('shutdown');
    expect(of(p, 's').reasons).toContain('state unknown: shut down instead (destroyed only at its deadline)');
    expect(of(p, 'm').action).toBe('shutdown');
    expect(of(p, 'm').reasons.join()).toContain('memory unknown');
    expect(p.space[0]?.plannedBytes ?? 0).toBe(0);
  });

  it('name unknown: handled by UUID, counted as persistent; shutdown mode is unchanged; fully described guests are not named', async () => {
    const id = '084149e7-9171-411b-a0a7-4233aaefdf57';
    const p = await plan([{ name: id, id, undescribed: undescribed(['identity'], ['dominfo: no answer within 15 s']) }], { mode: 'shutdown' });
    expect(of(p, id).action).toBe('shutdown');
    expect(of(p, id).reasons).toContain('name and persistence unknown: handled by UUID, counted as persistent');
    expect(undescribedNote(p)).toBe(`not described in time, handled with safe defaults: '${id}': shutdown with defaults for identity (dominfo: no answer within 15 s)`);
    expect(undescribedNote(await plan([{ name: 'fine' }]))).toBeUndefined();
  });
});
