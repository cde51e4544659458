import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { exitCodeOfError } from '../../../src/cli/exit-codes.js';
import type { CliOptions } from '../../../src/config/cli-options.js';
import { ConfigError } from '../../../src/config/errors.js';
import { loadSettings } from '../../../src/config/load.js';
import { DEFAULTS } from '../../../src/config/settings.js';

const noOptions: CliOptions = { dryRun: false, json: false, verbosity: 0 };

function fsWith(files: Record<string, string>) {
  const vol = Volume.fromJSON(files);
  return (p: string) => vol.promises.readFile(p, 'utf8') as Promise<string>;
}

async function configError(p: Promise<unknown>): Promise<ConfigError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

describe('loadSettings', () => {
  it('gives the defaults when there is no settings file', async () => {
    const s = await loadSettings({ options: noOptions, env: {}, readFile: fsWith({}) });
    expect(s).toEqual(DEFAULTS);
  });

  it('reads KEY=value lines with comments, quotes and export', async () => {
    const readFile = fsWith({
      '/etc/default/libvirt': [
        '# settings',
        '',
        'TIMEOUT=120',
        "export PARALLEL='4'",
        'MODULES="tun vhost_net kvm"   # trailing comment',
        'ON_SHUTDOWN=shutdown',
        'URIS="qemu:///system lxc:///system"',
        'LIBVIRT_OPTS=" -f /etc/libvirt/libvirtd.conf "',
        'VIRTUSER=qemu',
      ].join('\n'),
    });
    const s = await loadSettings({ options: noOptions, env: {}, readFile });
    expect(s.timeout).toBe(120);
    expect(s.parallel).toBe(4);
    expect(s.modules).toEqual(['tun', 'vhost_net', 'kvm']);
    expect(s.onShutdown).toBe('shutdown');
    expect(s.uris).toEqual(['qemu:///system', 'lxc:///system']);
    expect(s.libvirtdOpts).toBe(' -f /etc/libvirt/libvirtd.conf ');
    expect(s.virtUser).toBe('qemu');
  });

  it('lets the environment override the file and the options override both', async () => {
    const readFile = fsWith({ '/etc/default/libvirt': 'TIMEOUT=120\nPARALLEL=2\nDRIVER=qmp\n' });
    const s = await loadSettings({
      options: { ...noOptions, timeout: '30', uri: ['test:///default'] },
      env: { TIMEOUT: '60', PARALLEL: '3', HOME: '/root', UNRELATED: 'x' },
      readFile,
    });
    expect(s.timeout).toBe(30);
    expect(s.parallel).toBe(3);
    expect(s.driver).toBe('qmp');
    expect(s.uris).toEqual(['test:///default']);
  });

  it('takes LIBVIRTD_OPTS over LIBVIRT_OPTS within a layer, and a later layer over both', async () => {
    const readFile = fsWith({ '/etc/default/libvirt': 'LIBVIRTD_OPTS="-a"\nLIBVIRT_OPTS="-b"\n' });
    expect((await loadSettings({ options: noOptions, env: {}, readFile })).libvirtdOpts).toBe('-a');
    expect((await loadSettings({ options: noOptions, env: { LIBVIRT_OPTS: '-c' }, readFile })).libvirtdOpts).toBe('-c');
  });

  it('finds the file through RC_LIBVIRT_CONFIG and --config', async () => {
    const readFile = fsWith({ '/a': 'TIMEOUT=11\n', '/b': 'TIMEOUT=22\n' });
    expect((await loadSettings({ options: noOptions, env: { RC_LIBVIRT_CONFIG: '/a' }, readFile })).timeout).toBe(11);
    const s = await loadSettings({ options: { ...noOptions, config: '/b' }, env: { RC_LIBVIRT_CONFIG: '/a' }, readFile });
    expect(s.timeout).toBe(22);
    expect(s.configFile).toBe('/b');
  });

  it('refuses a missing file given with --config', async () => {
    const err = await configError(loadSettings({ options: { ...noOptions, config: '/nope' }, env: {}, readFile: fsWith({}) }));
    expect(err.message).toContain('/nope');
    expect(exitCodeOfError(err)).toBe(6);
  });

  it.each([
    ['TIMEOUT=abc', 'TIMEOUT'],
    ['TIMEOUT=-5', 'TIMEOUT'],
    ['TIMEOUT=0', 'TIMEOUT'],
    ['PARALLEL=1.5', 'PARALLEL'],
    ['ON_SHUTDOWN=hibernate', 'ON_SHUTDOWN'],
    ['NO_SUCH_KEY=1', 'NO_SUCH_KEY'],
    ['URIS=""', 'URIS'],
    ['RC_LIBVIRT_RUN_DIR=relative/dir', 'RC_LIBVIRT_RUN_DIR'],
    ['LIBVIRTD_OPTS="-f \'/x"', 'LIBVIRTD_OPTS'],
    ['MODULES=tun vhost_net', 'MODULES'],
    ['TIMEOUT="12', 'TIMEOUT'],
    ['VIRTUSER=$USER', 'VIRTUSER'],
  ])('names file, line and key for %s', async (line, key) => {
    const readFile = fsWith({ '/etc/default/libvirt': `# first\nDRIVER=libvirt\n${line}\n` });
    const err = await configError(loadSettings({ options: noOptions, env: {}, readFile }));
    expect(err.message).toContain('/etc/default/libvirt:3');
    expect(err.message).toContain(key);
    expect(err.where).toMatchObject({ file: '/etc/default/libvirt', line: 3, key });
  });

  it('refuses RC_LIBVIRT_CONFIG inside the settings file', async () => {
    const readFile = fsWith({ '/etc/default/libvirt': 'RC_LIBVIRT_CONFIG=/other\n' });
    const err = await configError(loadSettings({ options: noOptions, env: {}, readFile }));
    expect(err.message).toContain('/etc/default/libvirt:1: RC_LIBVIRT_CONFIG');
  });

  it('names the line of a line that is not an assignment', async () => {
    const readFile = fsWith({ '/etc/default/libvirt': 'TIMEOUT=5\nthis is not a setting\n' });
    const err = await configError(loadSettings({ options: noOptions, env: {}, readFile }));
    expect(err.message).toContain('/etc/default/libvirt:2');
  });

  it('names the variable or option for a bad value there', async () => {
    const readFile = fsWith({});
    const e1 = await configError(loadSettings({ options: noOptions, env: { PARALLEL: 'all' }, readFile }));
    expect(e1.message).toContain('environment variable PARALLEL');
    const e2 = await configError(loadSettings({ options: { ...noOptions, onBoot: 'maybe' }, env: {}, readFile }));
    expect(e2.message).toContain('--on-boot');
  });

  it('treats an empty environment variable as unset, except options strings and modules', async () => {
    const s = await loadSettings({ options: noOptions, env: { TIMEOUT: '', MODULES: '', VIRTLOGD_OPTS: '' }, readFile: fsWith({}) });
    expect(s.timeout).toBe(300);
    expect(s.modules).toEqual([]);
    expect(s.virtlogdOpts).toBe('');
  });
});
