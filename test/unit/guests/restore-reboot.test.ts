import { describe, expect, it, vi } from 'vitest';
import { fakeClock } from '../../fakes/clock.js';
import type { Journal, JournalEntry } from '../../../src/guests/journal.js';
import { SILENT_OBSERVER } from '../../../src/guests/observer.js';
import { rebootAll } from '../../../src/guests/reboot.js';
import { restoreAll } from '../../../src/guests/restore.js';
import { libvirtLikeDriver, type FakeDriver } from '../../fakes/libvirt-like-driver.js';
import { qmpLikeDriver } from '../../fakes/qmp-like-driver.js';

function memJournal(entries: JournalEntry[]): Journal & { cleared: string[] } {
  const cleared: string[] = [];
  return {
    cleared,
    entries: () => entries,
    record: async () => undefined,
    clear: async (_uri, id) => {
      cleared.push(id);
    },
  };
}
const entry = (name: string, order = 0, over: Partial<JournalEntry> = {}): JournalEntry => ({
  uri: 'fake:///one', id: name, name, action: 'saved', stateBefore: 'running', order, at: 'x', ...over,
});

describe('restore at start', () => {
  const clock = fakeClock();

  it('goes ascending by order with START_DELAY between launches, clearing each entry once back', async () => {
    const d = libvirtLikeDriver([
      { name: 'late', state: 'shutoff', hasSavedImage: true, script: { startMs: 100 } },
      { name: 'early', state: 'shutoff', hasSavedImage: true, script: { startMs: 100 } },
      { name: 'early2', state: 'shutoff', script: { startMs: 100 } },
    ], { uri: 'fake:///one' });
    const j = memJournal([entry('late', 5), entry('early', 1), entry('early2', 1, { action: 'shutdown' })]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 10, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(60_000);
    const out = await p;
    const starts = d.calls.filter((c) => c.op === 'restore' || c.op === 'start').map((c) => [c.name, c.op, c.at - clock.t0]);
    expect(starts).toEqual([['early', 'restore', 0], ['early2', 'start', 10_000], ['late', 'restore', 20_000]]);
    expect(out.map((o) => o.result)).toEqual(['restored', 'restored', 'started']);
    expect(j.cleared.sort()).toEqual(['early', 'early2', 'late']);
  });

  it('ON_BOOT=ignore leaves libvirt guests, but boots qmp autostart guests (as libvirtd boots its own), with or without a journal entry', async () => {
    const lv = libvirtLikeDriver([{ name: 'lv', state: 'shutoff', hasSavedImage: true, autostart: true }], { uri: 'fake:///one' });
    const q = qmpLikeDriver([
      { name: 'auto', state: 'shutoff', hasSavedImage: true, autostart: true },
      { name: 'auto-cold', state: 'shutoff', autostart: true },
      { name: 'plain', state: 'shutoff', hasSavedImage: true },
    ], { uri: 'qmp:///g' });
    const j = memJournal([entry('lv'), entry('auto', 0, { uri: 'qmp:///g' }), entry('plain', 0, { uri: 'qmp:///g' })]);
    const tasks = [...j.entries().map((e) => ({ entry: e })), { entry: entry('auto-cold', 0, { uri: 'qmp:///g', action: 'shutdown' }), source: 'autostart' }];
    const p = restoreAll(tasks, {
      drivers: [lv, q], journal: j, timeout: 60, onBoot: 'ignore', startDelay: 0, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const byName = new Map((await p).map((o) => [o.guest.name, o.result]));
    expect(Object.fromEntries(byName)).toEqual({ lv: 'skipped', auto: 'restored', 'auto-cold': 'started', plain: 'skipped' });
    expect(j.cleared.sort()).toEqual(['auto', 'auto-cold']);
  });

  it('resumes a guest that was running but comes back paused, and asks a paused one to come back paused', async () => {
    const d = libvirtLikeDriver([
      { name: 'was running', state: 'shutoff', hasSavedImage: true, script: { startsPaused: true } },
      { name: 'was paused', state: 'shutoff', hasSavedImage: true },
    ], { uri: 'fake:///one' });
    const j = memJournal([entry('was running'), entry('was paused', 0, { stateBefore: 'paused' })]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = await p;
    const byName = new Map(out.map((o) => [o.guest.name, o]));
    expect(byName.get('was running')).toMatchObject({ result: 'restored', reason: 'came back paused: resumed' });
    expect(byName.get('was paused')).toMatchObject({ result: 'restored', reason: 'paused, as it was' });
    expect(d.calls.filter((c) => c.op === 'resume').map((c) => c.name)).toEqual(['was running']);
    expect((await d.getGuest('was running', { signal: new AbortController().signal })).state).toBe('running');
    expect((await d.getGuest('was paused', { signal: new AbortController().signal })).state).toBe('paused');
    expect(j.cleared.sort()).toEqual(['was paused', 'was running']);
  });

  it('takes the state a start read along with it (libvirt) without waiting; asks when the start gave none (qmp)', async () => {
    // waitFails: a wait would fail; only a restore that needs none comes back.
    const lv = libvirtLikeDriver([{ name: 'lv', state: 'shutoff', hasSavedImage: true, script: { waitFails: true } }], { uri: 'fake:///one' });
    const q = qmpLikeDriver([{ name: 'q', state: 'shutoff', hasSavedImage: true, script: { waitFails: true } }], { uri: 'qmp:///g' });
    const j = memJournal([entry('lv'), entry('q', 0, { uri: 'qmp:///g' })]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [lv, q], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const byName = new Map((await p).map((o) => [o.guest.name, o]));
    expect(byName.get('lv')).toMatchObject({ result: 'restored' });
    expect(byName.get('q')).toMatchObject({ result: 'failed' });
    expect(byName.get('q')!.reason).toMatch(/does not answer/);
    expect(j.cleared).toEqual(['lv']);
  });

  it('tries a start that failed for a resource unavailable for a moment again, and no other failure', async () => {
    const eagain = "Failed to start domain 'x' / failed to load cgroup BPF prog: Resource temporarily unavailable";
    const d = libvirtLikeDriver([
      { name: 'busy host', state: 'shutoff', hasSavedImage: true, script: { startFails: eagain, startFailsFirst: 1 } },
      { name: 'always busy', state: 'shutoff', hasSavedImage: true, script: { startFails: eagain } },
      { name: 'broken', state: 'shutoff', hasSavedImage: true, script: { startFails: 'internal error: process exited while connecting to monitor' } },
    ], { uri: 'fake:///one' });
    const j = memJournal([entry('busy host'), entry('always busy'), entry('broken')]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = new Map((await p).map((o) => [o.guest.name, o]));
    expect(out.get('busy host')).toMatchObject({ result: 'restored' });
    expect(out.get('busy host')!.reason).toMatch(/^restore failed \(.*Resource temporarily unavailable\): tried again$/);
    expect(out.get('always busy')!.result).toBe('failed');
    expect(out.get('broken')!.result).toBe('failed');
    const tries = (name: string): number => d.calls.filter((c) => c.op === 'restore' && c.name === name).length;
    expect([tries('busy host'), tries('always busy'), tries('broken')]).toEqual([2, 3, 1]);
    expect(j.cleared).toEqual(['busy host']);
  });

  it('keeps the entry of a guest that does not come back in time', async () => {
    const d = libvirtLikeDriver([{ name: 'slow', state: 'shutoff', script: { startMs: 120_000 } }], { uri: 'fake:///one' });
    const j = memJournal([entry('slow')]);
    const p = restoreAll([{ entry: entry('slow') }], {
      drivers: [d], journal: j, timeout: 30, onBoot: 'restore', startDelay: 0, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER,
    });
    await vi.advanceTimersByTimeAsync(30_000);
    const [o] = await p;
    expect(o!.result).toBe('failed');
    expect(o!.reason).toContain('not back within 30 s');
    expect(j.cleared).toEqual([]);
  });
});

describe('restore at start, from the listing taken before', () => {
  const clock = fakeClock();
  const signal = new AbortController().signal;
  const listingOf = async (d: FakeDriver) => new Map([[d.uri, await d.listGuests({ signal })]]);

  it('looks no guest up on its own, and starts the restores of a group together', async () => {
    const d = libvirtLikeDriver(['a', 'b', 'c'].map((name) => ({ name, state: 'shutoff' as const, hasSavedImage: true, script: { startMs: 500 } })), { uri: 'fake:///one' });
    const listed = await listingOf(d);
    const j = memJournal([entry('a'), entry('b'), entry('c')]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await p).map((o) => o.result)).toEqual(['restored', 'restored', 'restored']);
    expect(d.reads).toEqual({ listings: 1, lookups: [] });
    expect(d.calls.filter((c) => c.op === 'restore').map((c) => c.at - clock.t0)).toEqual([0, 0, 0]);
    expect(j.cleared.sort()).toEqual(['a', 'b', 'c']);
  });

  it('keeps every check a lookup made: undefined, on_boot=ignore, already running, not shut off, image gone, not fully described', async () => {
    const d = libvirtLikeDriver([
      { name: 'ignored', state: 'shutoff', hasSavedImage: true, policy: { onBoot: 'ignore' } },
      { name: 'autostarted', state: 'running' },
      { name: 'crashed', state: 'other', stateDetail: 'crashed (panicked)' },
      { name: 'image gone', state: 'shutoff', hasSavedImage: false },
      { name: 'half known', state: 'shutoff', hasSavedImage: true },
    ], { uri: 'fake:///one' });
    const listed = await listingOf(d);
    // A guest the listing could not describe in full holds defaults there: it is looked up on its own.
    const half = listed.get('fake:///one')!.find((g) => g.name === 'half known')!;
    Object.assign(half, { state: 'other', hasSavedImage: false, undescribed: { missing: ['state'], problems: ['domstate: no answer within 15 s'] } });
    const warned: string[] = [];
    const j = memJournal([entry('gone'), entry('ignored'), entry('autostarted'), entry('crashed'), entry('image gone'), entry('half known')]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed, warn: (m) => warned.push(m),
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = new Map((await p).map((o) => [o.guest.name, o]));
    expect(out.get('gone')).toMatchObject({ result: 'skipped', reason: 'no longer defined on fake:///one: entry dropped' });
    expect(warned).toEqual(["journal entry of guest 'gone' (gone) on fake:///one: no such guest any more: entry dropped"]);
    expect(out.get('ignored')).toMatchObject({ result: 'skipped', reason: 'policy on_boot=ignore: left as it is' });
    expect(out.get('autostarted')).toMatchObject({ result: 'skipped', reason: 'already running (brought back by libvirt itself, e.g. autostart): left alone' });
    expect(out.get('crashed')).toMatchObject({ result: 'failed', reason: 'in state crashed (panicked): not started, left in the journal' });
    expect(out.get('image gone')).toMatchObject({ result: 'started', reason: 'its saved image is gone: started afresh' });
    expect(out.get('half known')).toMatchObject({ action: 'restore', result: 'restored' });
    // Only the guest missing from the listing and the one it could not describe were looked up.
    expect(d.reads.lookups.sort()).toEqual(['gone', 'half known']);
    expect(j.cleared.sort()).toEqual(['autostarted', 'gone', 'half known', 'ignored', 'image gone']);
  });

  it('a guest started or undefined since the listing is looked up when its start is refused, and treated as the lookup says', async () => {
    const d = libvirtLikeDriver([
      { name: 'raced', state: 'shutoff', hasSavedImage: true },
      { name: 'removed', state: 'shutoff', hasSavedImage: true },
      { name: 'refused', state: 'shutoff', hasSavedImage: true, script: { startFails: 'internal error: process exited while connecting to monitor' } },
    ], { uri: 'fake:///one' });
    const listed = await listingOf(d);
    // After the listing: libvirtd's autostart brings 'raced' back, and 'removed' is undefined.
    const autostart = d.start('raced', { signal });
    await vi.advanceTimersByTimeAsync(1000);
    await autostart;
    d.guests.delete('removed');
    d.calls.length = 0;
    const j = memJournal([entry('raced'), entry('removed'), entry('refused')]);
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = new Map((await p).map((o) => [o.guest.name, o]));
    expect(out.get('raced')).toMatchObject({ result: 'skipped', reason: 'already running (brought back by libvirt itself, e.g. autostart): left alone' });
    expect(out.get('removed')).toMatchObject({ result: 'skipped', reason: 'no longer defined on fake:///one: entry dropped' });
    // Any other refusal is the restore's failure, with libvirt's words, and no lookup.
    expect(out.get('refused')).toMatchObject({ result: 'failed', reason: 'internal error: process exited while connecting to monitor: left in the journal' });
    expect(d.reads.lookups.sort()).toEqual(['raced', 'removed']);
    expect(d.state('raced')).toBe('running');
    expect(j.cleared.sort()).toEqual(['raced', 'removed']);
  });

  it('starts no guest until the daemons have settled, and none when one did not come up, keeping every entry', async () => {
    const make = () => libvirtLikeDriver([{ name: 'a', state: 'shutoff', hasSavedImage: true }], { uri: 'fake:///one' });
    const settled = make();
    const j = memJournal([entry('a')]);
    let up!: (why: string | undefined) => void;
    const ready = new Promise<string | undefined>((r) => (up = r));
    const p = restoreAll([{ entry: entry('a') }], {
      drivers: [settled], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed: await listingOf(settled), ready,
    });
    await vi.advanceTimersByTimeAsync(5000);
    expect(settled.calls).toEqual([]);
    up(undefined);
    await vi.advanceTimersByTimeAsync(1000);
    expect((await p).map((o) => o.result)).toEqual(['restored']);

    const died = make();
    const k = memJournal([entry('a')]);
    const q = restoreAll([{ entry: entry('a') }], {
      drivers: [died], journal: k, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed: await listingOf(died),
      ready: Promise.resolve('virtlogd did not come up'),
    });
    await vi.advanceTimersByTimeAsync(1000);
    expect(await q).toMatchObject([{ result: 'skipped', reason: 'not started: virtlogd did not come up; left in the journal' }]);
    expect(died.calls).toEqual([]);
    expect(k.cleared).toEqual([]);
  });

  it('lists again right before each later order group, and looks guests up one by one when that listing fails', async () => {
    const d = libvirtLikeDriver([
      { name: 'first', state: 'shutoff', hasSavedImage: true },
      { name: 'second', state: 'shutoff', hasSavedImage: true },
      { name: 'third', state: 'shutoff', hasSavedImage: true },
    ], { uri: 'fake:///one' });
    const listed = await listingOf(d);
    const j = memJournal([entry('first', 1), entry('second', 2), entry('third', 3)]);
    // The second group's listing works; the third's fails.
    const list = d.listGuests.bind(d);
    d.listGuests = async (o) => {
      if (d.reads.listings === 2) d.connection.listFails = 'libvirtd: connection reset';
      return list(o);
    };
    const p = restoreAll(j.entries().map((e) => ({ entry: e })), {
      drivers: [d], journal: j, timeout: 60, onBoot: 'restore', startDelay: 0, parallel: 0, signal, observer: SILENT_OBSERVER, listed,
    });
    await vi.advanceTimersByTimeAsync(10_000);
    expect((await p).map((o) => o.result)).toEqual(['restored', 'restored', 'restored']);
    expect(d.reads).toEqual({ listings: 3, lookups: ['third'] });
  });
});

describe('guests_reboot', () => {
  fakeClock();

  it('reboots running guests at once and reports the ones that do not run again in time', async () => {
    const d = libvirtLikeDriver([
      { name: 'a', script: { rebootMs: 2000 } },
      { name: 'hang', script: { rebootMs: 'never' } },
      { name: 'p', state: 'paused' },
    ]);
    const items = (await d.listGuests({ signal: new AbortController().signal })).map((guest) => ({ guest, driver: d }));
    const p = rebootAll(items, { timeout: 10, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER });
    await vi.advanceTimersByTimeAsync(10_000);
    const out = await p;
    expect(out.map((o) => `${o.guest.name}:${o.result}`)).toEqual(['a:rebooted', 'hang:failed', 'p:skipped']);
    expect(out[1]!.reason).toBe('did not run again within 10 s');
  });
});

describe.each([
  ['libvirt', libvirtLikeDriver],
  ['qmp', qmpLikeDriver],
] as const)('guests_reboot, %s driver', (_kind, make) => {
  fakeClock();

  it('a guest that powers off instead of rebooting is reported failed, with why', async () => {
    const d = make([{ name: 'off instead', script: { rebootMs: 1000, rebootEndsOff: true } }, { name: 'fine', script: { rebootMs: 1000 } }]);
    const items = (await d.listGuests({ signal: new AbortController().signal })).map((guest) => ({ guest, driver: d }));
    const p = rebootAll(items, { timeout: 10, parallel: 0, signal: new AbortController().signal, observer: SILENT_OBSERVER });
    await vi.advanceTimersByTimeAsync(1000);
    const out = new Map((await p).map((o) => [o.guest.name, o]));
    expect(out.get('fine')!.result).toBe('rebooted');
    expect(out.get('off instead')!.result).toBe('failed');
    expect(out.get('off instead')!.reason).toMatch(/powered off instead of rebooting|but it is shutdown/);
    expect(d.state('off instead')).toBe('shutoff');
  });
});
