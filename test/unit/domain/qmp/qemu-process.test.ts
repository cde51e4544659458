// Reads /proc on purpose (the identity check is what is tested), only for the
// test's own pid and for one above the kernel's pid_max, which cannot exist;
// nothing is signalled.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkPid, checkProcess, launchArgv, runtimePaths } from '../../../../src/domain/qmp/qemu-process.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-qproc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('QEMU process', () => {
  it('adds name, QMP socket, pidfile and daemonize (and -incoming defer -S to restore)', () => {
    const p = runtimePaths('/run/rcl', 'web');
    expect(launchArgv(['qemu', '-m', '256'], 'web', p)).toEqual([
      'qemu', '-m', '256', '-name', 'web', '-qmp', 'unix:/run/rcl/web.qmp,server=on,wait=off', '-pidfile', '/run/rcl/web.pid', '-daemonize',
    ]);
    expect(launchArgv(['qemu'], 'web', p, { incoming: true }).slice(-3)).toEqual(['-incoming', 'defer', '-S']);
    expect(launchArgv(['qemu'], 'web', p, { paused: true }).at(-1)).toBe('-S');
  });

  it('a pidfile naming a live process that is not our QEMU is a stale pidfile', async () => {
    const p = runtimePaths(dir, 'g');
    writeFileSync(p.pidfile, `${process.pid}\n`);
    const c = await checkProcess(p);
    expect(c).toMatchObject({ pid: process.pid, alive: false });
    expect(c.detail).toMatch(/not this guest's QEMU/);
    expect((await checkPid(2 ** 22 + 7, p.qmp)).alive).toBe(false);
  });

  it('names a bad or missing pidfile', async () => {
    const p = runtimePaths(dir, 'h');
    expect(await checkProcess(p)).toMatchObject({ alive: false, detail: 'no pidfile' });
    writeFileSync(p.pidfile, 'garbage');
    expect((await checkProcess(p)).detail).toMatch(/bad pidfile .*h\.pid/);
  });
});
