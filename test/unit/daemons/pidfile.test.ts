import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../../src/config/settings.js';
import { describeDaemon } from '../../../src/daemons/daemon-spec.js';
import { clearBadPidfile, findStrayProcesses, inspectPidfile, parsePidfile } from '../../../src/daemons/pidfile.js';
import type { ProcFs } from '../../../src/proc/identity.js';

const stat = (pid: number, comm: string, state = 'S') => `${pid} (${comm}) ${state} 1 ${pid} ${pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n`;

function procFs(files: Record<string, string>, links: Record<string, string> = {}): { fs: ProcFs; vol: InstanceType<typeof Volume> } {
  const vol = Volume.fromJSON(files);
  for (const [link, target] of Object.entries(links)) {
    vol.mkdirSync(link.slice(0, link.lastIndexOf('/')), { recursive: true });
    vol.symlinkSync(target, link);
  }
  return {
    vol,
    fs: {
      readFile: (p) => vol.promises.readFile(p, 'utf8') as Promise<string>,
      readlink: async (p) => String(await vol.promises.readlink(p)),
      unlink: (p) => vol.promises.unlink(p),
      readdir: async (p) => (await vol.promises.readdir(p)).map(String),
    },
  };
}

const libvirtd = describeDaemon(DEFAULTS, 'libvirtd');

describe('parsePidfile', () => {
  it.each([
    ['1234\n', 1234],
    ['  77 ', 77],
  ])('reads %j', (text, pid) => expect(parsePidfile(text)).toEqual({ pid }));
  it.each(['', '\n', 'abc', '12 34', '-5', '0', '1', '99999999999', '12abc'])('refuses %j', (text) => {
    expect(parsePidfile(text)).toHaveProperty('error');
  });
});

describe('inspectPidfile', () => {
  it('says missing when there is no pidfile', async () => {
    expect(await inspectPidfile(libvirtd, procFs({}).fs)).toEqual({ state: 'missing' });
  });

  it('says running when the pid is that daemon (by /proc/PID/exe)', async () => {
    const { fs } = procFs(
      { '/var/run/libvirt/libvirtd.pid': '500\n', '/proc/500/stat': stat(500, 'libvirtd'), '/proc/500/comm': 'libvirtd\n' },
      { '/proc/500/exe': '/usr/sbin/libvirtd' },
    );
    expect(await inspectPidfile(libvirtd, fs)).toEqual({ state: 'running', pid: 500 });
  });

  it('still knows the daemon after its binary was replaced (exe ends in " (deleted)")', async () => {
    const { fs } = procFs(
      { '/var/run/libvirt/libvirtd.pid': '500\n', '/proc/500/stat': stat(500, 'libvirtd') },
      { '/proc/500/exe': '/usr/sbin/libvirtd (deleted)' },
    );
    expect(await inspectPidfile(libvirtd, fs)).toEqual({ state: 'running', pid: 500 });
  });

  it('falls back to comm when exe cannot be read', async () => {
    const { fs } = procFs({ '/var/run/libvirt/libvirtd.pid': '500', '/proc/500/stat': stat(500, 'libvirtd'), '/proc/500/comm': 'libvirtd\n' });
    expect(await inspectPidfile(libvirtd, fs)).toEqual({ state: 'running', pid: 500 });
  });

  it('says stale when the pid does not run, or is a zombie', async () => {
    expect(await inspectPidfile(libvirtd, procFs({ '/var/run/libvirt/libvirtd.pid': '500' }).fs)).toEqual({ state: 'stale', pid: 500 });
    const zombie = procFs({ '/var/run/libvirt/libvirtd.pid': '500', '/proc/500/stat': stat(500, 'libvirtd', 'Z') }, { '/proc/500/exe': '/usr/sbin/libvirtd' });
    expect(await inspectPidfile(libvirtd, zombie.fs)).toEqual({ state: 'stale', pid: 500 });
  });

  it('says foreign when the pid is another program, and clearing it never touches that process', async () => {
    const { fs, vol } = procFs(
      { '/var/run/libvirt/libvirtd.pid': '600', '/proc/600/stat': stat(600, 'sleep'), '/proc/600/comm': 'sleep\n' },
      { '/proc/600/exe': '/usr/bin/sleep' },
    );
    const st = await inspectPidfile(libvirtd, fs);
    expect(st).toEqual({ state: 'foreign', pid: 600, program: 'sleep' });
    const said = await clearBadPidfile(libvirtd, st, fs);
    expect(said).toContain('pid 600, which is sleep, not libvirtd');
    expect(said).toContain('removed');
    expect(vol.existsSync('/var/run/libvirt/libvirtd.pid')).toBe(false);
  });

  it('says invalid for garbage', async () => {
    const st = await inspectPidfile(libvirtd, procFs({ '/var/run/libvirt/libvirtd.pid': 'hello' }).fs);
    expect(st).toMatchObject({ state: 'invalid' });
  });
});

describe('findStrayProcesses', () => {
  it('finds processes of the program the pidfile does not name, but not the daemon\'s own children', async () => {
    const withPpid = (pid: number, comm: string, ppid: number) => `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n`;
    const { fs } = procFs(
      {
        '/proc/500/stat': withPpid(500, 'libvirtd', 1),
        '/proc/501/stat': withPpid(501, 'libvirtd', 500),
        '/proc/700/stat': withPpid(700, 'libvirtd', 1),
        '/proc/800/stat': withPpid(800, 'libvirtd', 1),
        '/proc/800/comm': 'libvirtd\n',
        '/proc/900/stat': withPpid(900, 'sleep', 1),
        '/proc/self/stat': withPpid(1, 'x', 0),
      },
      { '/proc/500/exe': '/usr/sbin/libvirtd', '/proc/501/exe': '/usr/sbin/libvirtd', '/proc/700/exe': '/usr/local/sbin/libvirtd', '/proc/900/exe': '/usr/bin/sleep' },
    );
    // 800 has only a comm: too weak to count.
    expect(await findStrayProcesses(libvirtd, 500, fs)).toEqual([700]);
    expect((await findStrayProcesses(libvirtd, undefined, fs)).sort()).toEqual([500, 501, 700]);
  });
});
