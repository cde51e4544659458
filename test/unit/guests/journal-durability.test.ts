// The journal is what start restores from: a write must reach the disk before
// it replaces the old journal (fsync of the new file, then rename, then fsync
// of the directory), and a write cut off half-way (disk full, crash) must leave
// the old journal whole. The file system is the real one (a temp directory);
// node:fs/promises is wrapped only to see the calls in their order and to make
// one write stop half-way, as a full disk does.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JOURNAL_FILE, openJournal, readJournal, type JournalEntry } from '../../../src/guests/journal.js';

const seen = vi.hoisted(() => ({ ops: [] as string[], failNextWrite: false }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  type Data = string | Uint8Array;
  // Writes the first half of `data`, then fails as a full disk does.
  const halfThenFail = async (write: (d: Data) => Promise<void>, data: Data): Promise<never> => {
    seen.failNextWrite = false;
    const bytes = Buffer.from(data);
    await write(bytes.subarray(0, bytes.length >> 1));
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  };
  const open = async (path: string, flags?: string | number, mode?: number): Promise<import('node:fs/promises').FileHandle> => {
    const fh = await real.open(path, flags, mode);
    seen.ops.push(`open ${path}`);
    return new Proxy(fh, {
      get(target, prop) {
        if (prop === 'writeFile' || prop === 'write') {
          return async (data: Data, ...rest: unknown[]) => {
            seen.ops.push(`write ${path}`);
            if (seen.failNextWrite) return halfThenFail((d) => target.writeFile(d), data);
            return (target[prop] as (...a: unknown[]) => Promise<unknown>).call(target, data, ...rest);
          };
        }
        if (prop === 'sync' || prop === 'datasync') {
          return async () => {
            seen.ops.push(`sync ${path}`);
            return target[prop]();
          };
        }
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  };
  const writeFile = async (path: string, data: Data, opts?: unknown): Promise<void> => {
    seen.ops.push(`write ${path}`);
    if (seen.failNextWrite) return halfThenFail((d) => real.writeFile(path, d), data);
    return real.writeFile(path, data, opts as never);
  };
  const rename = async (from: string, to: string): Promise<void> => {
    seen.ops.push(`rename ${from} ${to}`);
    return real.rename(from, to);
  };
  const mocked = { ...real, open, writeFile, rename };
  return { ...mocked, default: mocked };
});

const entry = (name: string): JournalEntry => ({
  uri: 'qemu:///system', id: `id-${name}`, name, action: 'saved', stateBefore: 'running', order: 0, at: '2026-01-01T00:00:00.000Z',
});

describe('journal on disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-journal-d-'));
    seen.ops.length = 0;
    seen.failNextWrite = false;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('syncs the new journal to disk before it replaces the old one, and the directory after', async () => {
    const j = openJournal(dir, []);
    await j.record(entry('web'));
    const path = join(dir, JOURNAL_FILE);
    const renameAt = seen.ops.findIndex((o) => o.startsWith('rename ') && o.endsWith(` ${path}`));
    expect(renameAt).toBeGreaterThan(-1);
    const temp = seen.ops[renameAt]!.split(' ')[1]!;
    expect(temp).not.toBe(path);
    const lastWrite = seen.ops.lastIndexOf(`write ${temp}`);
    const fileSync = seen.ops.lastIndexOf(`sync ${temp}`);
    expect(lastWrite).toBeGreaterThan(-1);
    expect(fileSync).toBeGreaterThan(lastWrite);
    expect(fileSync).toBeLessThan(renameAt);
    expect(seen.ops.indexOf(`sync ${dir}`, renameAt)).toBeGreaterThan(renameAt);
  });

  it('replaces the file instead of writing into it: each write is a new inode', async () => {
    const j = openJournal(dir, []);
    await j.record(entry('a'));
    const first = await stat(join(dir, JOURNAL_FILE));
    await j.record(entry('b'));
    const second = await stat(join(dir, JOURNAL_FILE));
    expect(second.ino).not.toBe(first.ino);
    expect((await readJournal(dir)).entries.map((e) => e.name)).toEqual(['a', 'b']);
  });

  it('a write cut off half-way (disk full) fails loudly and leaves the old journal whole', async () => {
    const j = openJournal(dir, []);
    await j.record(entry('a'));
    seen.failNextWrite = true;
    await expect(j.record(entry('b'))).rejects.toThrow(/ENOSPC/);
    expect(seen.failNextWrite).toBe(false);
    const read = await readJournal(dir);
    expect(read.damaged).toBeUndefined();
    expect(read.entries.map((e) => e.name)).toEqual(['a']);
    expect(await readdir(dir)).toEqual([JOURNAL_FILE]);
  });
});
