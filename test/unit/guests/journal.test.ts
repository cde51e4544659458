import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JOURNAL_FILE, openJournal, parseJournal, readJournal, type JournalEntry } from '../../../src/guests/journal.js';

const entry = (name: string, over: Partial<JournalEntry> = {}): JournalEntry => ({
  uri: 'qemu:///system', id: `id-${name}`, name, action: 'saved', stateBefore: 'running', order: 0, at: '2026-01-01T00:00:00.000Z', ...over,
});

describe('journal', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-journal-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is empty when there is no file', async () => {
    expect(await readJournal(join(dir, 'none'))).toEqual({ entries: [] });
  });

  it('records and clears entries, written to disk at once, no temp file left', async () => {
    const j = openJournal(join(dir, 'state'), []);
    await j.record(entry('a b'));
    await j.record(entry('--c', { stateBefore: 'paused', action: 'shutdown', order: 3 }));
    await j.record(entry('a b', { action: 'destroyed' }));
    expect((await readJournal(join(dir, 'state'))).entries.map((e) => [e.name, e.action])).toEqual([['--c', 'shutdown'], ['a b', 'destroyed']]);
    await j.clear('qemu:///system', 'id-a b');
    expect((await readJournal(join(dir, 'state'))).entries.map((e) => e.name)).toEqual(['--c']);
    expect(await readdir(join(dir, 'state'))).toEqual([JOURNAL_FILE]);
  });

  it('keeps a damaged journal aside and says so', async () => {
    await writeFile(join(dir, JOURNAL_FILE), '{"version":1,"entries":[{"uri":"x"');
    const r = await readJournal(dir);
    expect(r.entries).toEqual([]);
    expect(r.damaged).toMatch(/damaged \(not JSON.*kept as .*journal\.json\.damaged-/);
    const files = await readdir(dir);
    expect(files.some((f) => f.startsWith(`${JOURNAL_FILE}.damaged-`))).toBe(true);
    const kept = files.find((f) => f.startsWith(`${JOURNAL_FILE}.damaged-`))!;
    expect(await readFile(join(dir, kept), 'utf8')).toContain('"uri":"x"');
  });

  it('names the entry and field that is wrong', () => {
    expect(() => parseJournal(JSON.stringify({ version: 1, entries: [entry('a'), { ...entry('b'), action: 'eaten' }] }))).toThrow(/entry 1: "action"/);
    expect(() => parseJournal(JSON.stringify({ version: 2, entries: [] }))).toThrow(/version/);
    expect(() => parseJournal(JSON.stringify({ version: 1, entries: [{ ...entry('b'), stateBefore: 'shutoff' }] }))).toThrow(/entry 0: "stateBefore"/);
  });

  it('status reads a damaged journal without moving it', async () => {
    await writeFile(join(dir, JOURNAL_FILE), 'garbage');
    const r = await readJournal(dir, { keepDamaged: true });
    expect(r.damaged).toContain('damaged');
    expect(await readdir(dir)).toEqual([JOURNAL_FILE]);
  });

  // A decoy root file: what a planted symlink points at must stay as it was.
  const decoy = async (): Promise<{ path: string; check: () => Promise<void> }> => {
    const path = join(dir, 'decoy');
    await writeFile(path, 'root secret\n');
    const before = await stat(path);
    return {
      path,
      check: async () => {
        expect(await readFile(path, 'utf8')).toBe('root secret\n');
        expect((await stat(path)).mtimeMs).toBe(before.mtimeMs);
      },
    };
  };

  it('a symlink in place of the journal is not followed: not read, moved aside as it is, replaced by a real file', async () => {
    const d = await decoy();
    const state = join(dir, 'state');
    await mkdir(state, { mode: 0o700 });
    await symlink(d.path, join(state, JOURNAL_FILE));
    const r = await readJournal(state);
    expect(r.entries).toEqual([]);
    expect(r.damaged).toMatch(/journal\.json is a symbolic link: not followed; kept as .*journal\.json\.unreadable-/);
    const aside = (await readdir(state)).find((f) => f.startsWith(`${JOURNAL_FILE}.unreadable-`))!;
    expect(await readlink(join(state, aside))).toBe(d.path);
    await openJournal(state, []).record(entry('a'));
    expect((await lstat(join(state, JOURNAL_FILE))).isFile()).toBe(true);
    await d.check();
  });

  it('status sees a symlinked journal without following or moving it', async () => {
    const d = await decoy();
    await symlink(d.path, join(dir, JOURNAL_FILE));
    const r = await readJournal(dir, { keepDamaged: true });
    expect(r.damaged).toMatch(/symbolic link: not followed$/);
    expect(await readdir(dir)).toEqual(expect.arrayContaining([JOURNAL_FILE, 'decoy']));
    expect((await readdir(dir)).length).toBe(2);
  });

  it('an unreadable journal (EISDIR here, as EACCES or EIO) never throws: no entries, kept aside, said so', async () => {
    await mkdir(join(dir, JOURNAL_FILE));
    const r = await readJournal(dir);
    expect(r.entries).toEqual([]);
    expect(r.damaged).toMatch(/cannot be read \(EISDIR.*kept as .*\.unreadable-/);
    expect(await readdir(dir)).toEqual([expect.stringMatching(/^journal\.json\.unreadable-/)]);
  });

  it('the temp file has a name nobody can guess: links planted at the old predictable names are left alone', async () => {
    const d = await decoy();
    const state = join(dir, 'state');
    await mkdir(state, { mode: 0o700 });
    for (const n of [`${JOURNAL_FILE}.tmp-${process.pid}`, `.${JOURNAL_FILE}.tmp-${process.pid}`]) await symlink(d.path, join(state, n));
    await openJournal(state, []).record(entry('a'));
    await d.check();
    expect((await readJournal(state)).entries.map((e) => e.name)).toEqual(['a']);
  });

  it('is not written into a state directory that is a symlink, or that others can write', async () => {
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere, { mode: 0o700 });
    await symlink(elsewhere, join(dir, 'state'));
    await expect(openJournal(join(dir, 'state'), []).record(entry('a'))).rejects.toThrow(/not written: .*state is a symbolic link/);
    expect(await readdir(elsewhere)).toEqual([]);
    const open = join(dir, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    await expect(openJournal(open, []).record(entry('a'))).rejects.toThrow(/not written: .*others could change it/);
    expect(await readdir(open)).toEqual([]);
  });
});

