// rc.libvirt's own directories: created root-owned (the running user) 0700, an
// existing one with another owner or mode fixed and said so, a symlink or a
// file in its place refused without touching what it points to.
import { chown, chmod, lstat, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ensureOwnDir, ownIds, UnsafeDirError } from '../../../src/util/own-dir.js';

describe('ensureOwnDir', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-owndir-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a missing directory (and its parents) owned by us, mode 0700, with nothing to say', async () => {
    const d = join(dir, 'a', 'state');
    expect(await ensureOwnDir(d)).toBeUndefined();
    const st = await stat(d);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([ownIds().uid, ownIds().gid, 0o700]);
  });

  it('fixes a directory with another mode and says what it was', async () => {
    const d = join(dir, 'run');
    await mkdir(d, { mode: 0o755 });
    await chmod(d, 0o2755);
    expect(await ensureOwnDir(d)).toMatch(/run was owner \d+:\d+ mode 2755: set to \d+:\d+ mode 0700/);
    expect((await stat(d)).mode & 0o7777).toBe(0o700);
    expect(await ensureOwnDir(d)).toBeUndefined();
  });

  it.runIf(process.geteuid?.() === 0)('as root: takes back a directory another account owns', async () => {
    const d = join(dir, 'state');
    await mkdir(d, { mode: 0o750 });
    await chown(d, 65534, 65534);
    expect(await ensureOwnDir(d)).toMatch(/was owner 65534:65534 mode 0750: set to 0:0 mode 0700/);
    const st = await stat(d);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o700]);
  });

  it('refuses a symlink in place of the directory and leaves its target as it was', async () => {
    const target = join(dir, 'elsewhere');
    await mkdir(target, { mode: 0o755 });
    const d = join(dir, 'state');
    await symlink(target, d);
    await expect(ensureOwnDir(d)).rejects.toThrow(UnsafeDirError);
    await expect(ensureOwnDir(d)).rejects.toThrow(/state is a symbolic link: refused/);
    expect((await stat(target)).mode & 0o7777).toBe(0o755);
    expect((await lstat(d)).isSymbolicLink()).toBe(true);
    expect(await readdir(target)).toEqual([]);
  });

  it('refuses a file in place of the directory', async () => {
    const d = join(dir, 'state');
    await writeFile(d, 'x');
    await expect(ensureOwnDir(d)).rejects.toThrow(/is not a directory: refused/);
  });
});
