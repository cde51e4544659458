// The journal as the guest steps use it: a failure to write or read it is an
// error (named in the summary, the step unclean) that never keeps a guest from
// being handled; start restores every saved image the journal does not name
// (ON_BOOT=restore; ON_BOOT=ignore leaves it); entries of connections not in
// this run are kept for their own driver, entries of vanished guests dropped
// with a warning. The file system is real (a temp directory); node:fs/promises
// is wrapped only to make the journal's temp file fail as a full disk does.
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULTS, type Settings } from '../../../src/config/settings.js';
import { JOURNAL_FILE, readJournal, type JournalEntry } from '../../../src/guests/journal.js';
import { pendingGuests, startGuests, stopGuests, type GuestStepContext } from '../../../src/rc/guest-steps.js';
import { createMemoryLog } from '../../../src/util/log.js';
import { libvirtLikeDriver, type FakeDriver } from '../../fakes/libvirt-like-driver.js';
import { qmpLikeDriver } from '../../fakes/qmp-like-driver.js';

const disk = vi.hoisted(() => ({ full: false }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  // A full disk: the journal's temp file is created, and its first write fails.
  const open = async (path: string, flags?: string | number, mode?: number): Promise<import('node:fs/promises').FileHandle> => {
    const fh = await real.open(path, flags, mode);
    if (!disk.full || !path.includes('.tmp-')) return fh;
    return new Proxy(fh, {
      get(target, prop) {
        if (prop === 'writeFile') return async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        };
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  };
  const mocked = { ...real, open };
  return { ...mocked, default: mocked };
});

const fast = { saveMs: 20, shutdownMs: 20, startMs: 5 };
const URI = 'fake:///one';

describe('the journal in the guest steps', () => {
  let dir: string;
  let settings: Settings;
  let out: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-steps-j-'));
    settings = { ...DEFAULTS, stateDir: join(dir, 'state'), timeout: 60, uris: [URI] };
    out = '';
    disk.full = false;
  });
  afterEach(async () => {
    disk.full = false;
    await rm(dir, { recursive: true, force: true });
  });
  const run = (over: Partial<Settings> = {}) => {
    const stdout = new PassThrough();
    stdout.on('data', (b: Buffer) => (out += b.toString()));
    const log = createMemoryLog();
    const ctx: GuestStepContext = { settings: { ...settings, ...over }, log, signal: new AbortController().signal, dryRun: false, stdout };
    return { ctx, log, said: () => log.lines.map((l) => `${l.level}: ${l.msg}`).join('\n') };
  };
  const deps = (d: FakeDriver) => ({ openDrivers: async () => [d] });
  const errors = (log: ReturnType<typeof createMemoryLog>) => log.lines.filter((l) => l.level === 'error').map((l) => l.msg);
  const plant = async (entries: JournalEntry[]): Promise<void> => {
    await mkdir(settings.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(join(settings.stateDir, JOURNAL_FILE), JSON.stringify({ version: 1, entries }));
  };
  const entry = (name: string, over: Partial<JournalEntry> = {}): JournalEntry => ({
    uri: URI, id: name, name, action: 'saved', stateBefore: 'running', order: 0, at: '2026-01-01T00:00:00.000Z', ...over,
  });

  it('stop with a full disk: every guest is still saved or shut down; the journal failure is an error, in the summary, the step unclean', async () => {
    const d = libvirtLikeDriver([{ name: 'web', script: fast }, { name: 'gpu', saveBlockers: ['hostdev'], script: fast }], { uri: URI });
    disk.full = true;
    const { ctx, log } = run({ parallel: 0 });
    const r = await stopGuests(ctx, 'policy', deps(d));
    expect(d.state('web')).toBe('shutoff');
    expect(d.state('gpu')).toBe('shutoff');
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`).sort()).toEqual(['gpu:shutdown', 'web:saved']);
    expect(r.clean).toBe(false);
    expect(out).toMatch(/web +save +saved +[\d.]+ +saved, but not in the journal: journal .*journal\.json: cannot write: ENOSPC/);
    expect(out).toMatch(/gpu +shutdown +shutdown .*shutdown, but not in the journal/);
    const e = errors(log).join('\n');
    expect(e).toMatch(/journal .*journal\.json failed: .*ENOSPC.*start restores the saved images without it, but will not start gpu/);
    expect(await readdir(settings.stateDir)).toEqual([]);
  });

  it('start with a full disk: the guest comes back, the failed clear is an error naming the journal, the step unclean', async () => {
    await plant([entry('web')]);
    const d = libvirtLikeDriver([{ name: 'web', state: 'shutoff', hasSavedImage: true, script: fast }], { uri: URI });
    disk.full = true;
    const { ctx, log } = run();
    const r = await startGuests(ctx, deps(d));
    expect(d.state('web')).toBe('running');
    expect(r.clean).toBe(false);
    expect(out).toMatch(/web +restore +restored .*journal not updated: journal .*cannot write: ENOSPC/);
    expect(errors(log).join('\n')).toMatch(/journal .*journal\.json failed: .*ENOSPC/);
    disk.full = false;
    expect((await readJournal(settings.stateDir)).entries.map((e) => e.name)).toEqual(['web']);
  });

  it('stop with an unreadable journal: the guests are handled, a fresh journal holds them, the old one is kept aside, exit unclean', async () => {
    await mkdir(join(settings.stateDir, JOURNAL_FILE), { recursive: true });
    const d = libvirtLikeDriver([{ name: 'web', script: fast }], { uri: URI });
    const { ctx, log } = run();
    const r = await stopGuests(ctx, 'policy', deps(d));
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`)).toEqual(['web:saved']);
    expect(r.clean).toBe(false);
    expect(errors(log).join('\n')).toMatch(/journal .*journal\.json cannot be read \(EISDIR.*kept as .*unreadable-/);
    expect(errors(log).join('\n')).toMatch(/failed: .*a new journal holds what this stop did/);
    expect((await pendingGuests(settings)).map((p) => p.name)).toEqual(['web']);
  });

  it('stop with the state directory replaced by a symlink: refused, not written through; the guests are handled all the same', async () => {
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere, { mode: 0o755 });
    await symlink(elsewhere, settings.stateDir);
    const d = libvirtLikeDriver([{ name: 'web', script: fast }], { uri: URI });
    const { ctx, log } = run();
    const r = await stopGuests(ctx, 'policy', deps(d));
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}`)).toEqual(['web:saved']);
    expect(r.clean).toBe(false);
    expect(errors(log).join('\n')).toMatch(/state is a symbolic link: refused/);
    expect(await readdir(elsewhere)).toEqual([]);
    expect((await lstat(settings.stateDir)).isSymbolicLink()).toBe(true);
  });

  it('start restores a saved image the journal does not name and says so; ON_BOOT=ignore leaves it', async () => {
    const d = libvirtLikeDriver([{ name: 'lost', state: 'shutoff', hasSavedImage: true, script: fast }, { name: 'cold', state: 'shutoff', script: fast }], { uri: URI });
    const ignore = run({ onBoot: 'ignore' });
    const left = await startGuests(ignore.ctx, deps(d));
    expect(left.clean).toBe(true);
    expect(d.state('lost')).toBe('shutoff');
    expect(left.outcomes!.map((o) => `${o.guest.name}:${o.result}`)).toEqual(['lost:skipped']);
    expect(ignore.said()).toContain('lost: not in the journal, has a saved image: ON_BOOT=ignore: left as it is');
    const restore = run();
    const r = await startGuests(restore.ctx, deps(d));
    expect(r.clean).toBe(true);
    expect(d.state('lost')).toBe('running');
    expect(d.state('cold')).toBe('shutoff');
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}:${o.reason}`)).toEqual(['lost:restored:not in the journal, has a saved image']);
    expect(restore.said()).toContain('notice: lost: not in the journal, has a saved image: restoring it');
  });

  it('qmp: a saved image (NAME.save) the journal does not name is restored too, autostart or not', async () => {
    const d = qmpLikeDriver([{ name: 'vm1', state: 'shutoff', hasSavedImage: true, script: fast }, { name: 'vm2', state: 'shutoff', script: fast }]);
    const { ctx } = run();
    const r = await startGuests(ctx, deps(d));
    expect(r.clean).toBe(true);
    expect(r.outcomes!.map((o) => `${o.guest.name}:${o.result}:${o.reason}`)).toEqual(['vm1:restored:not in the journal, has a saved image']);
    expect(d.state('vm2')).toBe('shutoff');
  });

  it('start with an unreadable journal restores every saved image, and the step is unclean', async () => {
    await mkdir(join(settings.stateDir, JOURNAL_FILE), { recursive: true });
    const d = libvirtLikeDriver([{ name: 'saved', state: 'shutoff', hasSavedImage: true, script: fast }], { uri: URI });
    const { ctx, log } = run();
    const r = await startGuests(ctx, deps(d));
    expect(d.state('saved')).toBe('running');
    expect(r.clean).toBe(false);
    expect(errors(log).join('\n')).toMatch(/failed: .*cannot be read.*every guest with a saved image was restored all the same/);
  });

  it('an entry of another connection is kept for its own driver, not a failure; an entry of a vanished guest is dropped with a warning', async () => {
    const qmpEntry = entry('vm1', { uri: 'qmp:///etc/qemu/guests' });
    await plant([qmpEntry, entry('gone-guest'), entry('web')]);
    const d = libvirtLikeDriver([{ name: 'web', state: 'shutoff', hasSavedImage: true, script: fast }], { uri: URI });
    const { ctx, log, said } = run();
    const r = await startGuests(ctx, deps(d));
    expect(r.clean, said()).toBe(true);
    expect(r.failed).toEqual([]);
    expect(d.state('web')).toBe('running');
    expect(log.lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
      "journal entry of guest 'gone-guest' (gone-guest) on fake:///one: no such guest any more: entry dropped",
    ]);
    expect(said()).toContain('journal entry of guest vm1 (qmp:///etc/qemu/guests): not a connection of this run: kept for its own driver');
    expect((await readJournal(settings.stateDir)).entries).toEqual([qmpEntry]);
    expect(r.outcomes!.map((o) => o.guest.name).sort()).toEqual(['gone-guest', 'web']);
  });

  it('--dry-run of start reads a damaged journal without moving it and fixes no directory', async () => {
    await mkdir(settings.stateDir, { recursive: true, mode: 0o755 });
    await writeFile(join(settings.stateDir, JOURNAL_FILE), '{broken');
    const d = libvirtLikeDriver([{ name: 'saved', state: 'shutoff', hasSavedImage: true, script: fast }], { uri: URI });
    const { ctx } = run();
    const r = await startGuests({ ...ctx, dryRun: true }, deps(d));
    expect(r.clean).toBe(true);
    expect(out).toContain('order 0: saved: restore (not in the journal, has a saved image)');
    expect(await readdir(settings.stateDir)).toEqual([JOURNAL_FILE]);
    expect(await readFile(join(settings.stateDir, JOURNAL_FILE), 'utf8')).toBe('{broken');
    expect((await lstat(settings.stateDir)).mode & 0o777).toBe(0o755);
    expect(d.state('saved')).toBe('shutoff');
  });
});
