import { describe, expect, it, vi } from 'vitest';
import { fakeClock } from '../../fakes/clock.js';
import { NotReachableError } from '../../../src/domain/errors.js';
import type { DomainDriver, Guest } from '../../../src/domain/types.js';
import { JOURNAL_WAIT_MS, stopAll, type StopTask } from '../../../src/guests/ladder.js';
import { SILENT_OBSERVER } from '../../../src/guests/observer.js';
import { SHUTDOWN_REPEAT_MS, SHUTDOWN_RETRY_MS } from '../../../src/guests/shutdown-wait.js';
import { destroyedAfter, fellBack, judgeOutcomes, type GuestOutcome, type StopAction } from '../../../src/guests/outcome.js';
import { shutdownReserveMs } from '../../../src/guests/save-slots.js';
import { journalEntryFor } from '../../../src/guests/stop-policy.js';
import { decidePlan } from '../../../src/guests/plan.js';
import { runController } from '../../../src/util/deadline.js';
import { libvirtLikeDriver, type FakeDriver, type FakeGuest } from '../../fakes/libvirt-like-driver.js';
import { qmpLikeDriver } from '../../fakes/qmp-like-driver.js';

const settings = { onShutdown: 'managedsave' as const, timeout: 10 };
const BIG = new Map([['/fake/save', { freeBytes: 1e12, totalBytes: 1e12 }]]);

async function tasksFor(drivers: FakeDriver[], mode: 'policy' | 'shutdown' = 'policy', timeout = 10): Promise<StopTask[]> {
  const items: { guest: Guest; driver: DomainDriver }[] = [];
  for (const d of drivers) for (const g of await d.listGuests({ signal: new AbortController().signal })) items.push({ guest: g, driver: d });
  const plan = decidePlan(items, { ...settings, timeout }, mode, BIG);
  return plan.guests.map((p) => ({ plan: p, driver: items.find((i) => i.guest === p.guest)!.driver }));
}

function byName(outcomes: GuestOutcome[], name: string): GuestOutcome {
  const o = outcomes.find((x) => x.guest.name === name);
  if (!o) throw new Error(`no outcome for ${name}`);
  return o;
}

function run(tasks: StopTask[], opts: { parallel?: number; signal?: AbortSignal } = {}): Promise<GuestOutcome[]> {
  return stopAll(tasks, { parallel: opts.parallel ?? 0, signal: opts.signal ?? runController().signal, observer: SILENT_OBSERVER });
}

function at(d: FakeDriver, op: string, name: string): number {
  const c = d.calls.find((x) => x.op === op && x.name === name);
  if (!c) throw new Error(`no ${op} of ${name}: ${JSON.stringify(d.calls)}`);
  return c.at;
}

describe('stop ladder', () => {
  const clock = fakeClock();

  it('saves every guest concurrently', async () => {
    const d = libvirtLikeDriver([{ name: 'a' }, { name: 'b c' }, { name: '--dash' }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const out = await p;
    expect(out.map((o) => o.result)).toEqual(['saved', 'saved', 'saved']);
    for (const n of ['a', 'b c', '--dash']) expect(at(d, 'saved', n) - clock.t0).toBe(1000);
  });

  it('falls back to shutdown at once when the save fails, and never destroys', async () => {
    const d = libvirtLikeDriver([{ name: 'blocked', script: { saveFails: 'cannot migrate: invtsc', shutdownMs: 2000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(o!.reason).toContain('invtsc');
    expect(at(d, 'shutdown', 'blocked') - clock.t0).toBe(0);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it('aborts a save still running at the deadline, then destroys; never before the deadline', async () => {
    const d = libvirtLikeDriver([{ name: 'slow', script: { saveMs: 'never' } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(9999);
    expect(d.calls.map((c) => c.op)).toEqual(['save']);
    expect(d.state('slow')).toBe('paused');
    await vi.advanceTimersByTimeAsync(1);
    const [o] = await p;
    expect(o!.result).toBe('destroyed');
    const ops = d.calls.map((c) => c.op);
    expect(ops.indexOf('abort')).toBeGreaterThan(-1);
    expect(ops.indexOf('abort')).toBeLessThan(ops.indexOf('destroy'));
    expect(ops.indexOf('save-aborted')).toBeLessThan(ops.indexOf('destroy'));
    expect(at(d, 'destroy', 'slow') - clock.t0).toBeGreaterThanOrEqual(10_000);
    expect(o!.reason).toMatch(/still saving.*save job aborted/);
  });

  it('destroys a guest that ignores the ACPI request at its deadline, not before, while the others shut down', async () => {
    const d = libvirtLikeDriver([
      { name: 'stubborn', script: { shutdownMs: 'never' } },
      { name: 'nice', script: { shutdownMs: 3000 } },
    ]);
    const p = run(await tasksFor([d], 'shutdown', 5));
    await vi.advanceTimersByTimeAsync(4999);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    expect(d.state('nice')).toBe('shutoff');
    await vi.advanceTimersByTimeAsync(1);
    const out = await p;
    expect(byName(out, 'stubborn').result).toBe('destroyed');
    expect(byName(out, 'nice').result).toBe('shutdown');
    expect(at(d, 'destroy', 'stubborn') - clock.t0).toBe(5000);
  });

  it('never destroys before the deadline when waits fail at once (daemon hiccup)', async () => {
    const d = libvirtLikeDriver([{ name: 'h', script: { saveFails: 'no answer', shutdownMs: 'never', waitFails: true } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(9999);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const [o] = await p;
    expect(o!.result).toBe('destroyed');
    expect(at(d, 'destroy', 'h') - clock.t0).toBe(10_000);
  });

  it('presses the power button again when a press was lost, instead of destroying at the deadline', async () => {
    const d = libvirtLikeDriver([{ name: 'booting', script: { shutdownMs: 2000, lostPresses: 1 } }]);
    const p = run(await tasksFor([d], 'shutdown', 120));
    await vi.advanceTimersByTimeAsync(SHUTDOWN_REPEAT_MS + 2000);
    const [o] = await p;
    expect(o!.result).toBe('shutdown');
    expect(d.calls.filter((c) => c.op === 'shutdown').map((c) => c.at - clock.t0)).toEqual([0, SHUTDOWN_REPEAT_MS]);
    expect(o!.reason).toMatch(/asked again/);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it('sends a failed shutdown request again while time is left', async () => {
    const d = libvirtLikeDriver([{ name: 'busy', script: { saveFails: 'no space', shutdownMs: 1000, failedRequests: 2 } }]);
    const p = run(await tasksFor([d], 'policy', 120));
    await vi.advanceTimersByTimeAsync(2 * SHUTDOWN_RETRY_MS + 1000);
    const [o] = await p;
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(d.calls.filter((c) => c.op === 'shutdown').map((c) => c.at - clock.t0)).toEqual([0, SHUTDOWN_RETRY_MS, 2 * SHUTDOWN_RETRY_MS]);
    expect(o!.reason).toMatch(/shutdown request failed: the daemon is busy/);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it('uses a guest policy timeout over the setting', async () => {
    const d = libvirtLikeDriver([{ name: 's', policy: { timeout: 2 }, script: { shutdownMs: 'never' } }]);
    const p = run(await tasksFor([d], 'shutdown', 100));
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(o!.result).toBe('destroyed');
    expect(at(d, 'destroy', 's') - clock.t0).toBe(2000);
  });

  it('runs order groups one after another, descending at stop', async () => {
    const d = libvirtLikeDriver([
      { name: 'db', policy: { order: 1 }, script: { saveMs: 1000 } },
      { name: 'web', policy: { order: 2 }, script: { saveMs: 3000 } },
      { name: 'web2', policy: { order: 2 }, script: { saveMs: 500 } },
      { name: 'misc', script: { saveMs: 100 } },
    ]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(10_000);
    await p;
    expect(at(d, 'save', 'web') - clock.t0).toBe(0);
    expect(at(d, 'save', 'web2') - clock.t0).toBe(0);
    expect(at(d, 'save', 'db') - clock.t0).toBe(3000);
    expect(at(d, 'save', 'misc') - clock.t0).toBe(4000);
  });

  it('gives each group its own deadline from its start', async () => {
    const d = libvirtLikeDriver([
      { name: 'first', policy: { order: 1 }, script: { saveMs: 8000 } },
      { name: 'second', script: { saveMs: 'never' } },
    ]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(30_000);
    const out = await p;
    expect(byName(out, 'first').result).toBe('saved');
    expect(at(d, 'destroy', 'second') - clock.t0).toBe(18_000);
  });

  it('honours PARALLEL and frees a slot as soon as a guest finishes', async () => {
    const d = libvirtLikeDriver([
      { name: 'a', script: { saveMs: 1000 } },
      { name: 'b', script: { saveMs: 3000 } },
      { name: 'c', script: { saveMs: 1000 } },
    ]);
    const p = run(await tasksFor([d]), { parallel: 2 });
    await vi.advanceTimersByTimeAsync(5000);
    await p;
    expect(at(d, 'save', 'a') - clock.t0).toBe(0);
    expect(at(d, 'save', 'b') - clock.t0).toBe(0);
    expect(at(d, 'save', 'c') - clock.t0).toBe(1000);
  });

  it('acts on every connection at once', async () => {
    const d1 = libvirtLikeDriver([{ name: 'x' }], { uri: 'fake:///1' });
    const d2 = libvirtLikeDriver([{ name: 'x' }], { uri: 'fake:///2' });
    const p = run(await tasksFor([d1, d2]));
    await vi.advanceTimersByTimeAsync(1000);
    const out = await p;
    expect(out.map((o) => `${o.guest.uri} ${o.result}`).sort()).toEqual(['fake:///1 saved', 'fake:///2 saved']);
  });

  it('on interruption: aborts running saves, resumes the guests, drops the queue, destroys nothing', async () => {
    const d = libvirtLikeDriver([
      { name: 'a', script: { saveMs: 5000 } },
      { name: 'b', script: { saveMs: 'never' } },
      { name: 'queued', script: { saveMs: 100 } },
      { name: 'later', policy: { order: -1 } },
    ]);
    const ac = runController();
    const p = run(await tasksFor([d]), { parallel: 2, signal: ac.signal });
    await vi.advanceTimersByTimeAsync(1000);
    expect(d.state('a')).toBe('paused');
    ac.abort(new Error('SIGTERM'));
    await vi.advanceTimersByTimeAsync(100);
    const out = await p;
    for (const n of ['a', 'b', 'queued', 'later']) expect(d.state(n)).toBe('running');
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    expect(d.calls.some((c) => c.op === 'save' && c.name === 'queued')).toBe(false);
    expect(byName(out, 'a').result).toBe('failed');
    expect(byName(out, 'queued').result).toBe('skipped');
    expect(byName(out, 'later').result).toBe('skipped');
  });

  it('on interruption: a save that completed although its abort was asked for is reported saved (so it is journaled)', async () => {
    const d = libvirtLikeDriver([{ name: 'late', script: { saveMs: 'never', completesDespiteAbort: true } }, { name: 'aborted', script: { saveMs: 'never' } }]);
    const ac = runController();
    const recorded: string[] = [];
    const p = stopAll(await tasksFor([d]), {
      parallel: 0,
      signal: ac.signal,
      observer: SILENT_OBSERVER,
      onOutcome: async (o) => void recorded.push(`${o.guest.name} ${o.result}`),
    });
    await vi.advanceTimersByTimeAsync(1000);
    ac.abort(new Error('SIGHUP'));
    await vi.advanceTimersByTimeAsync(100);
    const out = await p;
    expect(byName(out, 'late')).toMatchObject({ result: 'saved', action: 'save' });
    expect(byName(out, 'late').reason).toContain('completed while the interruption was handled');
    expect(byName(out, 'aborted').result).toBe('failed');
    expect(d.state('aborted')).toBe('running');
    expect(recorded.sort()).toEqual(['aborted failed', 'late saved']);
  });

  it('interrupted during a shutdown: no destroy', async () => {
    const d = libvirtLikeDriver([{ name: 's', script: { shutdownMs: 'never' } }]);
    const ac = runController();
    const p = run(await tasksFor([d], 'shutdown'), { signal: ac.signal });
    await vi.advanceTimersByTimeAsync(1000);
    ac.abort(new Error('SIGINT'));
    await vi.advanceTimersByTimeAsync(20_000);
    const [o] = await p;
    expect(o!.result).toBe('failed');
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it("one guest's exception does not stop the others", async () => {
    const d = libvirtLikeDriver([{ name: 'bug', script: { explodes: 'boom' } }, { name: 'ok' }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(20_000);
    const out = await p;
    expect(byName(out, 'ok').result).toBe('saved');
    expect(['failed', 'destroyed']).toContain(byName(out, 'bug').result);
  });

  it('resumes a paused guest before its ACPI shutdown', async () => {
    const d = libvirtLikeDriver([{ name: 'p', state: 'paused', script: { shutdownMs: 500 } }]);
    const p = run(await tasksFor([d], 'shutdown'));
    await vi.advanceTimersByTimeAsync(500);
    const [o] = await p;
    expect(o!.result).toBe('shutdown');
    expect(d.calls.map((c) => c.op)).toEqual(['resume', 'shutdown', 'off']);
  });

  it('saves a paused guest as paused', async () => {
    const d = libvirtLikeDriver([{ name: 'p', state: 'paused' }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(o!.result).toBe('saved');
    expect(o!.stateBefore).toBe('paused');
    expect(d.calls.some((c) => c.op === 'resume')).toBe(false);
  });

  it('a planned destroy (ON_SHUTDOWN=destroy) is not a forced one', async () => {
    const d = libvirtLikeDriver([{ name: 'scratch', policy: { onShutdown: 'destroy' } }]);
    const out = await run(await tasksFor([d]));
    expect(out[0]!.result).toBe('destroyed');
    expect(out[0]!.plannedDestroy).toBe(true);
  });
});

// What the ladder must never do, on either kind of driver: destroy once
// interrupted, destroy a guest that is off already, ask a guest that is off to
// shut down.
describe.each([
  ['libvirt', libvirtLikeDriver],
  ['qmp', qmpLikeDriver],
] as const)('stop ladder, %s driver: no needless blow', (_kind, make) => {
  const clock = fakeClock();

  it('interrupted while the save is being aborted at its deadline: the guest is left running, not destroyed', async () => {
    // The save job lets go 3 s after its abort; SIGTERM comes 1 s into that.
    const d = make([{ name: 'slow', script: { saveMs: 'never', abortMs: 3000 } }]);
    const ac = runController();
    const p = run(await tasksFor([d]), { signal: ac.signal });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(d.calls.map((c) => c.op)).toEqual(['save', 'abort']);
    await vi.advanceTimersByTimeAsync(1000);
    ac.abort(new Error('SIGTERM'));
    await vi.advanceTimersByTimeAsync(30_000);
    const [o] = await p;
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    expect(d.state('slow')).toBe('running');
    expect(o!.result).toBe('failed');
    expect(o!.reason).toContain('interrupted: not destroyed');
  });

  it('a guest that went off while its daemon could not say so is found off at its deadline, not destroyed', async () => {
    // Every wait fails (the daemon hiccups); the guest goes off at 9 s; its timeout is 10 s.
    const d = make([{ name: 'quiet', script: { shutdownMs: 'never', waitFails: true, offAtMs: 9000 } }]);
    const p = run(await tasksFor([d], 'shutdown'));
    await vi.advanceTimersByTimeAsync(10_000 + 1000);
    const [o] = await p;
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    expect(o!.result).toBe('shutdown');
    expect(o!.reason).toContain('went off just at its deadline');
    expect(at(d, 'off', 'quiet') - clock.t0).toBe(9000);
  });

  it('a guest whose save failed because it went off is not asked to shut down', async () => {
    // QEMU died during the save: the save fails, the guest is off.
    const d = make([{ name: 'gone', script: { saveFails: 'operation failed: domain is not running', saveFailsAfterMs: 500, saveEndsOff: true } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['save', 'off']);
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(o!.reason).not.toMatch(/shutdown request failed/);
  });

  it('a failed save after which the guest\'s state cannot be read: it is asked to shut down all the same, not left to the deadline', async () => {
    const d = make([{ name: 'blind', script: { saveFails: 'write failed: No space left on device', saveFailsAfterMs: 500, shutdownMs: 1000 } }]);
    const tasks = await tasksFor([d]);
    // The daemon answers the save, then not the state query (a hiccup); the listing before it went fine.
    const blind: DomainDriver = Object.assign(Object.create(d) as DomainDriver, {
      getGuest: async () => {
        throw new NotReachableError('libvirt (fake) did not answer within 1.5 s: virsh domstate killed');
      },
    });
    const p = run(tasks.map((t) => ({ ...t, driver: blind })));
    await vi.advanceTimersByTimeAsync(3000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['save', 'put-back', 'shutdown', 'off']);
    expect(o!.result).toBe('shutdown');
    expect(o!.reason).toMatch(/state after the failed save could not be read .*asked to shut down all the same/);
  });

  it('a failed save that left the guest paused: the guest is resumed, then shut down', async () => {
    const d = make([{ name: 'stuck', script: { saveFails: 'write failed: No space left on device', saveFailsAfterMs: 500, putBackFails: true, shutdownMs: 1000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['save', 'resume', 'shutdown', 'off']);
    expect(o!.result).toBe('shutdown');
    expect(o!.reason).toContain('resumed so that it can shut down');
  });

  it('a destroy that fails at the deadline is reported as failed, with why', async () => {
    const d = make([{ name: 'unkillable', script: { shutdownMs: 'never', destroyFails: 'Failed to terminate process 4242 with SIGKILL: Device or resource busy' } }]);
    const p = run(await tasksFor([d], 'shutdown', 5));
    await vi.advanceTimersByTimeAsync(5000);
    const [o] = await p;
    expect(o!.result).toBe('failed');
    expect(o!.action).toBe('shutdown->destroy');
    expect(o!.reason).toContain('destroy failed: Failed to terminate process 4242');
    expect(d.state('unkillable')).toBe('running');
  });
});

// A save whose answer could not be read (a ProtocolError: the save's first
// `virsh domstate` came back empty, or a monitor reply that is not JSON) has
// not begun: it is tried again; a refusal is not.
describe.each([
  ['libvirt', libvirtLikeDriver],
  ['qmp', qmpLikeDriver],
] as const)('stop ladder, %s driver: a save whose answer could not be read', (_kind, make) => {
  const clock = fakeClock();

  it('is tried again a second later, and the guest is saved, the try named in its reasons', async () => {
    const d = make([{ name: 'flaky', script: { saveUnreadable: 1, saveMs: 1000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'save@1000', 'saved@2000']);
    expect(o!.result).toBe('saved');
    expect(o!.action).toBe('save');
    expect(o!.reason).toMatch(/save failed with an answer that could not be read \(.*(cannot read|not JSON).*\): tried again 1 s later \(try 2 of 3\)/);
  });

  it('one that keeps failing that way falls back to shutdown after three tries; the guest shuts down, nothing destroyed', async () => {
    const d = make([{ name: 'mute', script: { saveUnreadable: 99, shutdownMs: 1000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(12_000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'save@1000', 'save@2000', 'shutdown@2000', 'off@3000']);
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(o!.reason).toMatch(/try 3 of 3.*save failed: .*\(tried 3 times\); fell back to shutdown/);
    expect(d.state('mute')).toBe('shutoff');
  });

  it('a refused save (libvirt said no) is not tried again: the shutdown request follows at once', async () => {
    const d = make([{ name: 'hostdev', script: { saveFails: 'Requested operation is not valid: domain has assigned non-USB host devices', shutdownMs: 1000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(4000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'put-back@0', 'shutdown@0', 'off@1000']);
    expect(o!.result).toBe('shutdown');
    expect(o!.reason).not.toContain('tried again');
  });

  it('with only its shutdown reserve left, it is not tried again: the shutdown request follows at once', async () => {
    // Timeout 2 s: the reserve is 1 s, so no pause of 1 s fits before it.
    const d = make([{ name: 'late', script: { saveUnreadable: 1, shutdownMs: 500 } }]);
    const p = run(await tasksFor([d], 'policy', 2));
    await vi.advanceTimersByTimeAsync(3000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'shutdown@0', 'off@500']);
    expect(o!.result).toBe('shutdown');
    expect(o!.reason).toMatch(/\(not tried again: only its shutdown reserve of 1 s is left\); fell back to shutdown/);
  });

  it('interrupted in the pause before the next try: the guest is left running, not saved again, not destroyed', async () => {
    const d = make([{ name: 'flaky', script: { saveUnreadable: 1, shutdownMs: 'never' } }]);
    const ac = runController();
    const p = run(await tasksFor([d]), { signal: ac.signal });
    await vi.advanceTimersByTimeAsync(500);
    ac.abort(new Error('SIGTERM'));
    await vi.advanceTimersByTimeAsync(30_000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['save']);
    expect(d.state('flaky')).toBe('running');
    expect(o!.result).toBe('failed');
    expect(o!.reason).toContain('interrupted (SIGTERM): left as it is, not destroyed');
  });
});

// A save that completed in the hypervisor but whose call failed all the same (its answer lost):
// the guest is off with its image, and is journaled as saved, not as shut down.
describe.each([
  ['libvirt', libvirtLikeDriver],
  ['qmp', qmpLikeDriver],
] as const)('stop ladder, %s driver: a save that completed though its call failed', (_kind, make) => {
  const clock = fakeClock();

  it('the guest found off with its new image is saved, the failed call named; no shutdown request', async () => {
    const d = make([{ name: 'lost', script: { saveAnswerLost: 'unreachable' } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(3000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'saved@1000']);
    expect(o!.result).toBe('saved');
    expect(o!.action).toBe('save');
    expect(o!.reason).toMatch(/the save completed although the call failed \(.*(Connection reset by peer|survived SIGKILL)\): off, with its saved image/);
    expect(journalEntryFor(o!, 0)?.action).toBe('saved');
  });

  it('a failed save that left the guest off without an image is still a shutdown, journaled as one', async () => {
    const d = make([{ name: 'died', script: { saveFails: 'operation failed: domain is not running', saveFailsAfterMs: 500, saveEndsOff: true } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(d.guests.get('died')!.hasSavedImage).toBe(false);
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(o!.reason).not.toContain('the save completed');
    expect(journalEntryFor(o!, 0)?.action).toBe('shutdown');
  });
});

describe('stop ladder, libvirt driver: a completed save whose answer could not be read', () => {
  const clock = fakeClock();

  it('is not tried again (the guest is off): it is saved, one save call only', async () => {
    // virsh died after libvirt had finished managedsave: a ProtocolError, the kind of failure that is tried again.
    const d = libvirtLikeDriver([{ name: 'killed', script: { saveAnswerLost: 'unreadable' } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(5000);
    const [o] = await p;
    expect(d.calls.map((c) => `${c.op}@${c.at - clock.t0}`)).toEqual(['save@0', 'saved@1000']);
    expect(o!.result).toBe('saved');
    expect(o!.reason).toMatch(/the save completed although the call failed \(.*virsh died of SIGKILL\)/);
    expect(o!.reason).not.toContain('tried again');
    expect(journalEntryFor(o!, 0)?.action).toBe('saved');
  });
});

describe('stop ladder, qmp driver: a running guest listed with an image older than it', () => {
  fakeClock();
  const planted = (name: string, script: FakeGuest['script'] = {}): FakeGuest => ({ name, hasSavedImage: true, savedImageId: `${name}.save#old`, script });
  const ops = (d: FakeDriver, name: string): string[] => d.calls.filter((c) => c.name === name).map((c) => c.op);

  it('the listing names it (a problem, so the run exits non-zero)', async () => {
    const d = qmpLikeDriver([planted('old'), { name: 'clean' }]);
    const [old, clean] = await d.listGuests({ signal: new AbortController().signal });
    expect(old).toMatchObject({ hasSavedImage: true, staleImage: '/fake/save/old.save' });
    expect(old!.problem).toContain('older than the running guest');
    expect(clean!.staleImage).toBeUndefined();
    expect(clean!.problem).toBeUndefined();
  });

  it('a failed save leaves no image to restore: the older one was set aside before it; found off, it is a shutdown', async () => {
    const d = qmpLikeDriver([planted('old', { saveFails: 'Unable to write to socket: Broken pipe', saveFailsAfterMs: 500, saveEndsOff: true })]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(ops(d, 'old')).toEqual(['save', 'stale-aside', 'off']);
    expect(d.state('old')).toBe('shutoff');
    expect(d.guests.get('old')!.hasSavedImage).toBe(false);
    expect(o!.result).toBe('shutdown');
    expect(journalEntryFor(o!, 0)?.action).toBe('shutdown');
  });

  it('the older image does not make it saved when it could not be set aside: found off with it after the failed save, it is a shutdown', async () => {
    const d = qmpLikeDriver([planted('old', { staleAsideFails: true, saveFails: 'Unable to write to socket: Broken pipe', saveFailsAfterMs: 500, saveEndsOff: true })]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(d.state('old')).toBe('shutoff');
    expect(d.guests.get('old')).toMatchObject({ hasSavedImage: true, savedImageId: 'old.save#old' });
    expect(o!.result).toBe('shutdown');
    expect(journalEntryFor(o!, 0)?.action).toBe('shutdown');
  });

  it('a save that replaced it and completed although its call failed counts as saved: its image is another file', async () => {
    const d = qmpLikeDriver([planted('old', { staleAsideFails: true, saveAnswerLost: 'unreachable' })]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(5000);
    const [o] = await p;
    expect(ops(d, 'old')).toEqual(['save', 'stale-kept', 'saved']);
    expect(d.guests.get('old')!.savedImageId).not.toBe('old.save#old');
    expect(o!.result).toBe('saved');
    expect(o!.reason).toContain('the save completed although the call failed');
    expect(journalEntryFor(o!, 0)?.action).toBe('saved');
  });

  it('a shutdown sets it aside before the guest is asked to power off: off, it has no image to restore', async () => {
    const d = qmpLikeDriver([planted('old')]);
    const p = run(await tasksFor([d], 'shutdown'));
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(ops(d, 'old')).toEqual(['shutdown', 'stale-aside', 'off']);
    expect(o!.result).toBe('shutdown');
    expect(d.guests.get('old')!.hasSavedImage).toBe(false);
    // Handled, but found beside an image that was not its state: the run is not clean.
    expect(judgeOutcomes([o!])).toMatchObject({ clean: false, failed: ['old'] });
  });
});

describe('stop ladder: off after an aborted save is saved only with a new image', () => {
  fakeClock();

  it('at the deadline: a guest found off after its save was aborted, without a new image, went off by itself: a shutdown, not saved', async () => {
    // The job lets go 2 s after its abort; the guest powers off meanwhile.
    const d = libvirtLikeDriver([{ name: 'quit', script: { saveMs: 'never', abortMs: 2000, offAtMs: 11_000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(13_000);
    const [o] = await p;
    expect(d.state('quit')).toBe('shutoff');
    expect(d.guests.get('quit')!.hasSavedImage).toBe(false);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    expect(o!.result).toBe('shutdown');
    expect(o!.action).toBe('save->shutdown');
    expect(o!.reason).toContain('went off without a new saved image just at its deadline');
    expect(journalEntryFor(o!, 0)?.action).toBe('shutdown');
  });

  it('at the deadline: a qmp guest listed with an older image it kept, found off after the abort, is not saved', async () => {
    const d = qmpLikeDriver([{ name: 'old', hasSavedImage: true, script: { staleAsideFails: true, saveMs: 'never', abortMs: 2000, offAtMs: 11_000 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(13_000);
    const [o] = await p;
    expect(d.guests.get('old')!.hasSavedImage).toBe(true);
    expect(o!.result).toBe('shutdown');
    expect(journalEntryFor(o!, 0)?.action).toBe('shutdown');
  });

  it('at the deadline: a save that completed as its abort came (off, with an image it did not have) is saved', async () => {
    const d = libvirtLikeDriver([{ name: 'late', script: { saveMs: 'never', abortMs: 500, completesDespiteAbort: true } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(11_000);
    const [o] = await p;
    expect(o!.result).toBe('saved');
    expect(o!.reason).toContain('went off with its saved image just at its deadline');
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it('interrupted: a qmp guest listed with an older image it kept, found off after the abort, is not saved', async () => {
    const d = qmpLikeDriver([{ name: 'old', hasSavedImage: true, script: { staleAsideFails: true, saveMs: 'never', abortMs: 2000, offAtMs: 1500 } }]);
    const ac = runController();
    const p = run(await tasksFor([d]), { signal: ac.signal });
    await vi.advanceTimersByTimeAsync(1000);
    ac.abort(new Error('SIGTERM'));
    await vi.advanceTimersByTimeAsync(3000);
    const [o] = await p;
    expect(d.state('old')).toBe('shutoff');
    expect(d.guests.get('old')).toMatchObject({ hasSavedImage: true, savedImageId: 'old.save#0' });
    expect(o!.result).toBe('failed');
    expect(o!.reason).toContain('interrupted: save aborted, guest shutoff as before');
    expect(journalEntryFor(o!, 0)).toBeUndefined();
  });
});

describe('stop ladder, libvirt driver: transient guests', () => {
  fakeClock();

  it('a transient guest is shut down, not saved, and counts as off once libvirt has forgotten it', async () => {
    const d = libvirtLikeDriver([{ name: 'tmp', persistent: false, script: { shutdownMs: 1500 } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(1500);
    const [o] = await p;
    expect(o!.result).toBe('shutdown');
    expect(d.state('tmp')).toBe('gone');
    expect(d.calls.map((c) => c.op)).toEqual(['shutdown', 'off']);
  });
});

describe('stop ladder: PARALLEL limits saves only', () => {
  const clock = fakeClock();

  it('PARALLEL=1 with a short timeout: a guest still waiting for a save slot is asked to shut down before its deadline, outside the limit', async () => {
    // Timeout 10 s: the shutdown reserve is 5 s; each save takes 4 s; a saves 0-4 s, b 4-8 s; c still waits at 5 s.
    const d = libvirtLikeDriver(['a', 'b', 'c'].map((name) => ({ name, script: { saveMs: 4000, shutdownMs: 1000 } })));
    const tasks = await tasksFor([d]);
    expect(shutdownReserveMs(10_000)).toBe(5000);
    const p = run(tasks, { parallel: 1 });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = await p;
    expect(out.map((o) => `${o.guest.name}:${o.action}:${o.result}`)).toEqual(['a:save:saved', 'b:save:saved', 'c:save->shutdown:shutdown']);
    expect(at(d, 'save', 'b') - clock.t0).toBe(4000);
    expect(at(d, 'shutdown', 'c') - clock.t0).toBe(5000);
    expect(d.calls.some((c) => c.op === 'save' && c.name === 'c')).toBe(false);
    expect(byName(out, 'c').reason).toMatch(/no save slot \(PARALLEL=1\) until 5 s before its deadline: shut down instead/);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });

  it('every guest is asked to save or shut down before its deadline, however long the queue', async () => {
    // Ten guests whose saves never end, PARALLEL=1: only the first gets a slot.
    const names = Array.from({ length: 10 }, (_, i) => `g${i}`);
    const d = libvirtLikeDriver(names.map((name) => ({ name, script: { saveMs: 'never' as const, shutdownMs: 500 } })));
    const p = run(await tasksFor([d]), { parallel: 1 });
    await vi.advanceTimersByTimeAsync(40_000);
    const out = await p;
    for (const n of names) {
      const asked = d.calls.find((c) => c.name === n && (c.op === 'save' || c.op === 'shutdown'));
      expect(asked && asked.at - clock.t0, n).toBeLessThan(10_000);
    }
    expect(out.filter((o) => o.result === 'shutdown')).toHaveLength(9);
    expect(byName(out, 'g0').action).toBe('save->destroy');
  });

  it('shutdown requests are never held back by PARALLEL', async () => {
    const d = libvirtLikeDriver([
      { name: 'saving', script: { saveMs: 5000 } },
      { name: 'down1', policy: { onShutdown: 'shutdown' }, script: { shutdownMs: 1000 } },
      { name: 'down2', policy: { onShutdown: 'shutdown' }, script: { shutdownMs: 1000 } },
    ]);
    const p = run(await tasksFor([d]), { parallel: 1 });
    await vi.advanceTimersByTimeAsync(5000);
    await p;
    expect(at(d, 'shutdown', 'down1') - clock.t0).toBe(0);
    expect(at(d, 'shutdown', 'down2') - clock.t0).toBe(0);
  });

  it('a failed save frees its slot at once for the next save', async () => {
    const d = libvirtLikeDriver([
      { name: 'fails', script: { saveFails: 'invtsc', saveFailsAfterMs: 500, shutdownMs: 1000 } },
      { name: 'next', script: { saveMs: 1000 } },
    ]);
    const p = run(await tasksFor([d]), { parallel: 1 });
    await vi.advanceTimersByTimeAsync(3000);
    const out = await p;
    expect(at(d, 'save', 'next') - clock.t0).toBe(500);
    expect(out.map((o) => o.result)).toEqual(['shutdown', 'saved']);
  });
  it('a save tried again takes a slot like the first: it waits for the save that took the freed one', async () => {
    // flaky's first save fails at once (an answer that could not be read) and frees the slot; next saves 0-3 s.
    const d = libvirtLikeDriver([
      { name: 'flaky', script: { saveUnreadable: 1, saveMs: 1000 } },
      { name: 'next', script: { saveMs: 3000 } },
    ]);
    const p = run(await tasksFor([d], 'policy', 20), { parallel: 1 });
    await vi.advanceTimersByTimeAsync(5000);
    const out = await p;
    expect(d.calls.map((c) => `${c.op}:${c.name}@${c.at - clock.t0}`)).toEqual(['save:flaky@0', 'save:next@0', 'saved:next@3000', 'save:flaky@3000', 'saved:flaky@4000']);
    expect(out.map((o) => o.result)).toEqual(['saved', 'saved']);
  });
});

describe('stop ladder: the abort at the deadline goes through the driver', () => {
  const clock = fakeClock();

  it("the save still listens at its deadline: its own signal aborts (the driver's abort), then driver.abort, then destroy", async () => {
    const d = libvirtLikeDriver([{ name: 'slow', script: { saveMs: 'never', abortMs: 500 } }]);
    let saveSignal: AbortSignal | undefined;
    let saveSettled = false;
    const seen: { signalAborted: boolean; saveSettled: boolean; at: number }[] = [];
    const save = d.save.bind(d);
    const abort = d.abort.bind(d);
    d.save = (id, o) => {
      saveSignal = o.signal;
      const p = save(id, o);
      p.then(() => (saveSettled = true), () => (saveSettled = true));
      return p;
    };
    d.abort = (id, o) => {
      seen.push({ signalAborted: saveSignal?.aborted ?? false, saveSettled, at: performance.now() - clock.t0 });
      return abort(id, o);
    };
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(9999);
    expect(saveSignal?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(seen).toEqual([{ signalAborted: true, saveSettled: false, at: 10_000 }]);
    expect((saveSignal?.reason as Error).message).toContain('deadline');
    const ops = d.calls.map((c) => c.op);
    expect(ops.indexOf('save-aborted')).toBeLessThan(ops.indexOf('destroy'));
    expect(at(d, 'destroy', 'slow') - clock.t0).toBe(10_500);
    expect(o!.action).toBe('save->destroy');
    expect(o!.result).toBe('destroyed');
  });

  it('a save that completes as it is being aborted counts as saved: no destroy', async () => {
    const d = libvirtLikeDriver([{ name: 'just', script: { saveMs: 'never' } }]);
    // The save's own signal aborts first; the job then happens to finish instead of letting go.
    const save = d.save.bind(d);
    d.save = (id, o) => {
      const p = save(id, { ...o, signal: new AbortController().signal });
      return new Promise<void>((resolve, reject) => {
        o.signal.addEventListener('abort', () => {
          d.guests.get(id)!.state = 'shutoff';
          resolve();
        }, { once: true });
        p.then(resolve, reject);
      });
    };
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(10_000);
    const [o] = await p;
    expect(o!.result).toBe('saved');
    expect(o!.reason).toContain('the save completed as it was being aborted');
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
  });
});

describe('stop ladder: the journal write is waited for, within a bound', () => {
  const clock = fakeClock();

  it('a write that hangs holds the next order group JOURNAL_WAIT_MS at most, and is reported', async () => {
    const d = libvirtLikeDriver([{ name: 'first', policy: { order: 1 } }, { name: 'second' }]);
    const notes: string[] = [];
    const p = stopAll(await tasksFor([d]), {
      parallel: 0,
      signal: new AbortController().signal,
      observer: { ...SILENT_OBSERVER, note: (t) => notes.push(t) },
      onOutcome: (o) => (o.guest.name === 'first' ? new Promise<void>(() => undefined) : Promise.resolve()),
    });
    await vi.advanceTimersByTimeAsync(1000 + JOURNAL_WAIT_MS + 1000);
    const out = await p;
    expect(out.map((o) => o.result)).toEqual(['saved', 'saved']);
    expect(at(d, 'save', 'second') - clock.t0).toBe(1000 + JOURNAL_WAIT_MS);
    expect(notes).toContain(`first: the outcome was not recorded within ${JOURNAL_WAIT_MS / 1000} s: going on (the write goes on too)`);
  });
});

describe('stop ladder: typed paths', () => {
  fakeClock();

  it('names each path as a StopAction', async () => {
    const d = libvirtLikeDriver([
      { name: 'saved' },
      { name: 'fellback', script: { saveFails: 'invtsc', shutdownMs: 500 } },
      { name: 'ignored', script: { saveFails: 'invtsc', shutdownMs: 'never' } },
      { name: 'acpi', policy: { onShutdown: 'shutdown' }, script: { shutdownMs: 'never' } },
      { name: 'scratch', policy: { onShutdown: 'destroy' } },
    ]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(10_000);
    const out = await p;
    const paths: Record<string, StopAction> = {};
    for (const o of out) paths[o.guest.name] = o.action as StopAction;
    expect(paths).toEqual({ saved: 'save', fellback: 'save->shutdown', ignored: 'save->shutdown->destroy', acpi: 'shutdown->destroy', scratch: 'destroy' });
  });

  it('fellBack and destroyedAfter extend a path once', () => {
    expect(fellBack('save')).toBe('save->shutdown');
    expect(fellBack('save->shutdown')).toBe('save->shutdown');
    expect(destroyedAfter('save')).toBe('save->destroy');
    expect(destroyedAfter('shutdown')).toBe('shutdown->destroy');
    expect(destroyedAfter('save->shutdown')).toBe('save->shutdown->destroy');
    expect(destroyedAfter('destroy')).toBe('destroy');
  });
});

describe.each([
  ['libvirt', libvirtLikeDriver],
  ['qmp', qmpLikeDriver],
] as const)('stop ladder, %s driver: guests asleep in S3', (_kind, make) => {
  const clock = fakeClock();

  it('a suspended guest is woken, then saved', async () => {
    const d = make([{ name: 'sleepy', state: 'suspended', stateDetail: 'pmsuspended (unknown)' }]);
    const tasks = await tasksFor([d]);
    expect(tasks[0]!.plan.action).toBe('save');
    const p = run(tasks);
    await vi.advanceTimersByTimeAsync(2000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['wake', 'save', 'saved']);
    expect(o!.result).toBe('saved');
    expect(o!.reason).toContain('woken from S3');
    expect(journalEntryFor(o!, 0)?.stateBefore).toBe('running');
  });

  it('a suspended guest is woken, then shut down (shutdown mode)', async () => {
    const d = make([{ name: 'sleepy', state: 'suspended', script: { shutdownMs: 500 } }]);
    const p = run(await tasksFor([d], 'shutdown'));
    await vi.advanceTimersByTimeAsync(1000);
    const [o] = await p;
    expect(d.calls.map((c) => c.op)).toEqual(['wake', 'shutdown', 'off']);
    expect(o!.result).toBe('shutdown');
    expect(at(d, 'off', 'sleepy') - clock.t0).toBe(500);
  });

  it('a wake that fails: the save is still tried, then the shutdown, and only the deadline destroys', async () => {
    const d = make([{ name: 'deep', state: 'suspended', script: { wakeFails: 'guest does not support wakeup', shutdownMs: 'never' } }]);
    const p = run(await tasksFor([d]));
    await vi.advanceTimersByTimeAsync(9999);
    expect(d.calls.some((c) => c.op === 'destroy')).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const [o] = await p;
    expect(d.calls.map((c) => c.op).slice(0, 3)).toEqual(['wake', 'save', 'shutdown']);
    expect(o!.reason).toContain('waking it from S3 failed: guest does not support wakeup');
    expect(o!.result).toBe('destroyed');
  });

  it('a driver that cannot wake: planned for shutdown, with why', async () => {
    const d = make([{ name: 'sleepy', state: 'suspended', stateDetail: 'pmsuspended' }], { canWake: false });
    const [t] = await tasksFor([d]);
    expect(t!.plan.action).toBe('shutdown');
    expect(t!.plan.reasons.join('; ')).toMatch(/cannot wake it/);
  });
});
