import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { exitCodeOfError } from '../../../src/cli/exit-codes.js';
import type { CliOptions } from '../../../src/config/cli-options.js';
import { ConfigError } from '../../../src/config/errors.js';
import { loadSettings, readSettings } from '../../../src/config/load.js';
import { DEFAULTS, MAX_SECONDS } from '../../../src/config/settings.js';

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

describe('readSettings: every error at once, the defaults for the bad ones', () => {
  const FILE = '/etc/default/libvirt';
  const bad = ['# faults', 'TIMEOUT=5m', 'NO_SUCH_SETTING=1', 'ON_SHUTDOWN=hibernate', 'this is not a setting', 'PARALLEL=2', 'START_DELAY="7', ''].join('\n');

  it('names every bad line, unknown key and bad value by file:line: key, in file order, and keeps the good ones', async () => {
    const r = await readSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: bad }) });
    expect(r.errors.map((e) => e.where)).toEqual([
      { file: FILE, line: 2, key: 'TIMEOUT' },
      { file: FILE, line: 3, key: 'NO_SUCH_SETTING' },
      { file: FILE, line: 4, key: 'ON_SHUTDOWN' },
      { file: FILE, line: 5 },
      { file: FILE, line: 7, key: 'START_DELAY' },
    ]);
    expect(r.errors.map((e) => e.message)).toEqual([
      `${FILE}:2: TIMEOUT: must be a whole number of seconds, at least 1 (got "5m")`,
      expect.stringMatching(new RegExp(`^${FILE}:3: NO_SUCH_SETTING: unknown setting`)),
      `${FILE}:4: ON_SHUTDOWN: must be one of managedsave, shutdown, destroy (got "hibernate")`,
      `${FILE}:5: not a KEY=value line: "this is not a setting"`,
      `${FILE}:7: START_DELAY: unclosed double quote`,
    ]);
    expect(r.settings).toEqual({ ...DEFAULTS, parallel: 2 });
  });

  it('a bad value keeps the value an earlier line or layer gave', async () => {
    const r = await readSettings({ options: noOptions, env: { TIMEOUT: 'soon' }, readFile: fsWith({ [FILE]: 'TIMEOUT=120\nTIMEOUT=later\n' }) });
    expect(r.errors.map((e) => e.message)).toEqual([expect.stringContaining(`${FILE}:2: TIMEOUT`), expect.stringContaining('environment variable TIMEOUT')]);
    expect(r.settings.timeout).toBe(120);
  });

  it('loadSettings (the other commands) refuses with one error that lists every one', async () => {
    const err = await configError(loadSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: bad }) }));
    expect(err.message.split('\n')[0]).toBe('5 errors in the settings:');
    const lines = err.message.split('\n').slice(1);
    expect(lines.map((l) => l.trim().split(': ')[0])).toEqual([2, 3, 4, 5, 7].map((n) => `${FILE}:${n}`));
    expect(exitCodeOfError(err)).toBe(6);
  });

  it.each([
    ['DRIVER=libvrit', {}],
    ['URIS="qemu:///system', {}],
    ['DRIVER qmp', {}],
    ['', { DRIVER: 'xen' }],
    ['DRIVERS=qmp', {}],
    ['URI=qemu:///session', {}],
  ])('a bad DRIVER or URIS (%s %o): every driver, the good values kept', async (line, env) => {
    const r = await readSettings({ options: noOptions, env, readFile: fsWith({ [FILE]: `URIS=lxc:///system\n${line}\n` }) });
    expect(r.errors).toHaveLength(1);
    expect(r.settings).toMatchObject({ driver: 'libvirt', uris: ['lxc:///system'], everyDriver: true });
  });

  it('a line that is not KEY=value is named by the setting it begins with', async () => {
    const r = await readSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: 'TIMEOUT 300\n' }) });
    expect(r.errors[0]?.message).toBe(`${FILE}:1: TIMEOUT: not a KEY=value line: "TIMEOUT 300"`);
  });

  it('another bad setting leaves the driver as it is', async () => {
    const r = await readSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: 'DRIVER=qmp\nTIMEOUT=5m\nFOO=1\n' }) });
    expect(r.errors).toHaveLength(2);
    expect(r.settings).toMatchObject({ driver: 'qmp', everyDriver: false });
  });

  it('a bad --uri: every driver', async () => {
    const r = await readSettings({ options: { ...noOptions, uri: [''] }, env: {}, readFile: fsWith({}) });
    expect(r.errors[0]?.message).toContain('--uri');
    expect(r.settings.everyDriver).toBe(true);
  });

  it('an unreadable settings file, or a missing one given with --config: the defaults and every driver', async () => {
    const eacces = async (): Promise<string> => {
      throw Object.assign(new Error('denied'), { code: 'EACCES' });
    };
    const r1 = await readSettings({ options: noOptions, env: { DRIVER: 'qmp' }, readFile: eacces });
    expect(r1.errors[0]?.message).toBe(`${FILE}: cannot read the settings file (EACCES): every setting of it is at its default`);
    expect(r1.settings).toMatchObject({ driver: 'qmp', everyDriver: true });
    const r2 = await readSettings({ options: { ...noOptions, config: '/nope' }, env: {}, readFile: fsWith({}) });
    expect(r2.errors[0]?.message).toContain('/nope');
    expect(r2.settings).toMatchObject({ driver: 'libvirt', everyDriver: true });
  });

  it('good settings: no errors, no warnings, one driver', async () => {
    const r = await readSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: 'DRIVER=qmp\nTIMEOUT=600\n' }) });
    expect(r).toMatchObject({ errors: [], warnings: [] });
    expect(r.settings).toMatchObject({ driver: 'qmp', timeout: 600, everyDriver: false });
  });
});

describe('duration maxima', () => {
  const FILE = '/etc/default/libvirt';
  it('are 7 days for TIMEOUT, 1 hour for START_DELAY and DAEMON_TIMEOUT', () => {
    expect(MAX_SECONDS).toEqual({ timeout: 604800, startDelay: 3600, daemonTimeout: 3600 });
  });

  it('a larger value is clamped to the maximum with a warning naming where, never wrapped or refused', async () => {
    const text = 'TIMEOUT=99999999\nSTART_DELAY=3601\nDAEMON_TIMEOUT=123456789012345678901234567890\n';
    const r = await readSettings({ options: noOptions, env: {}, readFile: fsWith({ [FILE]: text }) });
    expect(r.errors).toEqual([]);
    expect(r.settings).toMatchObject({ timeout: 604800, startDelay: 3600, daemonTimeout: 3600 });
    expect(r.warnings).toEqual([
      `${FILE}:1: TIMEOUT: 99999999 s is above the maximum of 604800 s: 604800 s is used`,
      `${FILE}:2: START_DELAY: 3601 s is above the maximum of 3600 s: 3600 s is used`,
      `${FILE}:3: DAEMON_TIMEOUT: 123456789012345678901234567890 s is above the maximum of 3600 s: 3600 s is used`,
    ]);
    // loadSettings (the other commands) accepts it too: a warning, not an error.
    expect((await loadSettings({ options: { ...noOptions, timeout: '999999999' }, env: {}, readFile: fsWith({}) })).timeout).toBe(604800);
  });

  it('the maximum itself is taken as it is', async () => {
    const r = await readSettings({ options: { ...noOptions, timeout: '604800' }, env: {}, readFile: fsWith({}) });
    expect(r).toMatchObject({ errors: [], warnings: [] });
    expect(r.settings.timeout).toBe(604800);
  });
});
