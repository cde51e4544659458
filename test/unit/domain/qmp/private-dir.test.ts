import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, chownSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensurePrivateDir, isOwnRegularFile, UnsafePathError, writeFileAtomic } from '../../../../src/domain/qmp/private-dir.js';

const root = mkdtempSync(join(tmpdir(), 'rcl-privdir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('private directories', () => {
  it('creates a missing directory (and parents) with mode 0700', async () => {
    const d = join(root, 'a', 'b', 'run');
    await ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
  });

  it('tightens an existing directory of ours to 0700', async () => {
    const d = join(root, 'loose');
    mkdirSync(d);
    chmodSync(d, 0o755);
    await ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
  });

  it('refuses a symlink, a file, and (as root) another user\'s directory', async () => {
    const target = join(root, 'target');
    mkdirSync(target);
    symlinkSync(target, join(root, 'link'));
    await expect(ensurePrivateDir(join(root, 'link'))).rejects.toThrow(UnsafePathError);
    await expect(ensurePrivateDir(join(root, 'link'))).rejects.toThrow(/symbolic link/);
    writeFileSync(join(root, 'file'), '');
    await expect(ensurePrivateDir(join(root, 'file'))).rejects.toThrow(/not a directory/);
    if (process.geteuid?.() === 0) {
      const foreign = join(root, 'foreign');
      mkdirSync(foreign);
      chownSync(foreign, 65534, 65534);
      await expect(ensurePrivateDir(foreign)).rejects.toThrow(/owned by uid 65534/);
    }
  });

  it('does not take a symlink for a saved image', async () => {
    writeFileSync(join(root, 'real'), 'x');
    symlinkSync(join(root, 'real'), join(root, 'img-link'));
    await expect(isOwnRegularFile(join(root, 'img-link'))).rejects.toThrow(/symbolic link/);
    expect(await isOwnRegularFile(join(root, 'real'))).toBe(true);
    expect(await isOwnRegularFile(join(root, 'absent'))).toBe(false);
  });

  it('writes atomically, replacing a symlink rather than writing through it', async () => {
    const d = join(root, 'atomic');
    mkdirSync(d);
    writeFileSync(join(root, 'victim'), 'keep');
    symlinkSync(join(root, 'victim'), join(d, 'x.json'));
    await writeFileAtomic(join(d, 'x.json'), '{"a":1}');
    expect(readFileSync(join(root, 'victim'), 'utf8')).toBe('keep');
    expect(readFileSync(join(d, 'x.json'), 'utf8')).toBe('{"a":1}');
    expect(readdirSync(d)).toEqual(['x.json']);
  });
});
