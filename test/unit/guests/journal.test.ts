import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
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
});
