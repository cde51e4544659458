// Reads /proc on purpose (the identity check is what is tested), for the
// test's own pid, for processes the test starts itself, and for one above the
// kernel's pid_max, which cannot exist; only the test's own children are signalled.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkPid, checkProcess, launchArgv, qmpOption, runtimePaths } from '../../../../src/domain/qmp/qemu-process.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-qproc-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

// A process standing in for a QEMU: its command line carries `args`; resolves once it runs.
async function standIn(args: string[]): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', ...args], { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve) => child.once('spawn', resolve));
  return child.pid as number;
}

// Splits one of QEMU's `key=value,...` option strings the way QEMU does: ",," is a literal comma.
function parseQemuOpts(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.replaceAll(',,', '\0').split(',')) {
    const eq = part.indexOf('=');
    out.set(part.slice(0, eq), part.slice(eq + 1).replaceAll('\0', ','));
  }
  return out;
}

describe('QEMU process', () => {
  it('adds name, QMP socket, pidfile and daemonize (and -incoming defer -S to restore)', () => {
    const p = runtimePaths('/run/rcl', 'web');
    expect(launchArgv(['qemu', '-m', '256'], 'web', p)).toEqual([
      'qemu', '-m', '256', '-name', 'guest=web', '-qmp', 'unix:path=/run/rcl/web.qmp,server=on,wait=off', '-pidfile', '/run/rcl/web.pid', '-daemonize',
    ]);
    expect(launchArgv(['qemu'], 'web', p, { incoming: true }).slice(-3)).toEqual(['-incoming', 'defer', '-S']);
    expect(launchArgv(['qemu'], 'web', p, { paused: true }).at(-1)).toBe('-S');
  });

  it.each(['web=1', 'a,b', 'a,,b', 'my guest', `it's "q"`, '$HOME', 'guest=x,process=y', 'debug-threads=on'])(
    'passes the name %j and its socket path to QEMU as literal values',
    (name) => {
      const p = runtimePaths('/run/rc libvirt', name);
      const argv = launchArgv(['qemu'], name, p);
      const nameOpt = argv[argv.indexOf('-name') + 1] as string;
      expect(parseQemuOpts(nameOpt)).toEqual(new Map([['guest', name]]));
      const qmpOpt = argv[argv.indexOf('-qmp') + 1] as string;
      expect(qmpOpt.startsWith('unix:')).toBe(true);
      expect(parseQemuOpts(qmpOpt.slice('unix:'.length))).toEqual(new Map([['path', p.qmp], ['server', 'on'], ['wait', 'off']]));
      expect(argv[argv.indexOf('-pidfile') + 1]).toBe(p.pidfile);
    },
  );

  it('knows its QEMU by the -qmp option, as launched now or in the earlier form', async () => {
    const p = runtimePaths(dir, 'a,b=c');
    expect(await checkPid(await standIn(['-qmp', qmpOption(p.qmp)]), p.qmp)).toMatchObject({ alive: true });
    expect(await checkPid(await standIn(['-qmp', `unix:${p.qmp},server=on,wait=off`]), p.qmp)).toMatchObject({ alive: true });
    const other = runtimePaths(dir, 'a,b=cd');
    expect(await checkPid(await standIn(['-qmp', qmpOption(other.qmp)]), p.qmp)).toMatchObject({ alive: false });
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
