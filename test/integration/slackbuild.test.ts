// slackbuild/: the SlackBuild builds the program from this source tree (npm ci --offline, npm run
// build) into a temporary TMP, and its package tree is checked; doinst.sh is run in temporary roots
// for a fresh install, an upgrade of rc-libvirt and an upgrade from libvirt's shell rc.libvirt.
// Debian has no makepkg: the SlackBuild stops before it (MAKEPKG=no), and a plain tar of the package
// tree, named *-STANDIN-not-a-slackware-package.tar, stands in for the package in this test only.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const repo = join(import.meta.dirname, '../..');
const slackbuild = join(repo, 'slackbuild/rc-libvirt.SlackBuild');
const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
const doc = `usr/doc/rc-libvirt-${version}`;
const shellRcLibvirt = '#!/bin/bash\n# Slackware init script for libvirt (the shell one)\nTIMEOUT=${TIMEOUT:-300}\n';

let dir: string;
let pkg: string;
let standin: string;

function run(argv: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    cwd: opts.cwd ?? repo,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: 200_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const mode = (path: string): number => statSync(path).mode & 0o7777;

// installpkg's part, without installpkg: unpack the package into ROOT, run install/doinst.sh from there.
function installInto(root: string): string {
  mkdirSync(root, { recursive: true });
  const untar = run(['tar', '-C', root, '-xpf', standin]);
  expect(untar.status, untar.stderr).toBe(0);
  const doinst = run(['sh', 'install/doinst.sh', '-install'], { cwd: root });
  expect(doinst.status, doinst.stderr).toBe(0);
  rmSync(join(root, 'install'), { recursive: true, force: true });
  return doinst.stdout;
}

// A root where an earlier install left an rc.libvirt with MODE and an /etc/default/libvirt.
function oldRoot(name: string, rc: string, rcMode: number, settings?: string): string {
  const root = join(dir, name);
  mkdirSync(join(root, 'etc/rc.d'), { recursive: true });
  mkdirSync(join(root, 'etc/default'), { recursive: true });
  writeFileSync(join(root, 'etc/rc.d/rc.libvirt'), rc);
  chmodSync(join(root, 'etc/rc.d/rc.libvirt'), rcMode);
  if (settings !== undefined) writeFileSync(join(root, 'etc/default/libvirt'), settings);
  return root;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rcl-slackbuild-'));
  const built = run(['bash', slackbuild], {
    env: { TMP: join(dir, 'tmp'), OUTPUT: join(dir, 'out'), MAKEPKG: 'no', VIRTUSER: 'qemu', VIRTGROUP: 'kvm' },
  });
  expect(built.status, `${built.stdout}\n${built.stderr}`).toBe(0);
  expect(built.stdout).toContain('makepkg skipped');
  pkg = join(dir, 'tmp/package-rc-libvirt');
  standin = join(dir, 'out', `rc-libvirt-${version}-noarch-1_SBo-STANDIN-not-a-slackware-package.tar`);
  const tar = run(['tar', '-C', pkg, '-cpf', standin, '.']);
  expect(tar.status, tar.stderr).toBe(0);
}, 240_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('rc-libvirt.SlackBuild', () => {
  it('prints the package name with PRINT_PACKAGE_NAME and builds nothing', () => {
    const tmp = join(dir, 'print-tmp');
    const r = run(['bash', slackbuild], { env: { PRINT_PACKAGE_NAME: '1', TMP: tmp, OUTPUT: tmp } });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`rc-libvirt-${version}-noarch-1_SBo.tgz\n`);
    expect(existsSync(tmp)).toBe(false);
  });

  it('has the version of package.json, as does the .info', () => {
    expect(readFileSync(slackbuild, 'utf8')).toContain(`VERSION=\${VERSION:-${version}}`);
    const info = readFileSync(join(repo, 'slackbuild/rc-libvirt.info'), 'utf8');
    expect(info).toContain(`VERSION="${version}"`);
    expect(info).toMatch(/^REQUIRES="libvirt nodejs"$/m);
  });

  it('refuses a VIRTUSER that is not a name', () => {
    const tmp = join(dir, 'bad-user-tmp');
    const r = run(['bash', slackbuild], { env: { VIRTUSER: 'root; rm -rf /', TMP: tmp, OUTPUT: tmp, MAKEPKG: 'no' } });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('VIRTUSER/VIRTGROUP must be a user or group name');
  });

  it('packages the prebuilt program of a release tarball beside it, without npm', () => {
    // The SBo layout: the SlackBuild's directory with rc-libvirt-VERSION.tar.gz in it.
    const sbo = join(dir, 'sbo');
    mkdirSync(sbo);
    for (const f of ['rc-libvirt.SlackBuild', 'slack-desc', 'doinst.sh', 'README', 'rc-libvirt.info']) {
      writeFileSync(join(sbo, f), readFileSync(join(repo, 'slackbuild', f)));
    }
    const src = join(dir, 'release', `rc-libvirt-${version}`);
    mkdirSync(join(src, 'dist'), { recursive: true });
    const copy = run(['tar', '-C', repo, '--exclude=./node_modules', '--exclude=./dist', '--exclude=./.git', '--exclude=./.cache', '-cf', join(dir, 'tree.tar'), '.']);
    expect(copy.status, copy.stderr).toBe(0);
    expect(run(['tar', '-C', src, '-xf', join(dir, 'tree.tar')]).status).toBe(0);
    const prebuilt = '#!/usr/bin/env node\n// a prebuilt program\n';
    writeFileSync(join(src, 'dist/rc.libvirt'), prebuilt);
    expect(run(['tar', '-C', join(dir, 'release'), '-czf', join(sbo, `rc-libvirt-${version}.tar.gz`), `rc-libvirt-${version}`]).status).toBe(0);
    const tmp = join(dir, 'release-tmp');
    // An npm that fails first on PATH: the build must not need it.
    const bin = join(dir, 'no-npm');
    mkdirSync(bin);
    writeFileSync(join(bin, 'npm'), '#!/bin/sh\necho "npm must not run: $*" >&2\nexit 1\n');
    chmodSync(join(bin, 'npm'), 0o755);
    const r = run(['bash', join(sbo, 'rc-libvirt.SlackBuild')], { env: { TMP: tmp, OUTPUT: tmp, MAKEPKG: 'no', PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` } });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(readFileSync(join(tmp, 'package-rc-libvirt/usr/libexec/rc-libvirt/rc.libvirt'), 'utf8')).toBe(prebuilt);
  });

  it('installs the program, the rc script, the settings, the man page and the docs with their modes', () => {
    const expected: [string, number][] = [
      ['usr/libexec/rc-libvirt/rc.libvirt', 0o755],
      ['usr/libexec/rc-libvirt/package.json', 0o644],
      ['etc/rc.d/rc.libvirt.new', 0o755],
      ['etc/default/libvirt.new', 0o644],
      ['usr/man/man8/rc.libvirt.8.gz', 0o644],
      [`${doc}/rc-libvirt.SlackBuild`, 0o644],
      [`${doc}/README`, 0o644],
      [`${doc}/slackware.md`, 0o644],
      ['install/slack-desc', 0o644],
      ['install/doinst.sh', 0o644],
    ];
    for (const [path, m] of expected) expect([path, mode(join(pkg, path)).toString(8)]).toEqual([path, m.toString(8)]);
    const files = run(['find', '.', '-type', 'f'], { cwd: pkg }).stdout.split('\n').filter(Boolean).map((f) => f.slice(2)).sort();
    const allowed = new Set([...expected.map(([p]) => p), `${doc}/README.md`, `${doc}/LICENSE`]);
    expect(files.filter((f) => !allowed.has(f))).toEqual([]);
    expect(readFileSync(join(pkg, 'etc/rc.d/rc.libvirt.new'), 'utf8')).toBe(readFileSync(join(repo, 'rc/rc.libvirt'), 'utf8'));
    expect(readFileSync(join(pkg, `${doc}/rc-libvirt.SlackBuild`), 'utf8')).toBe(readFileSync(slackbuild, 'utf8'));
  });

  it('writes VIRTUSER and VIRTGROUP into the settings and changes nothing else', () => {
    const shipped = readFileSync(join(pkg, 'etc/default/libvirt.new'), 'utf8');
    const template = readFileSync(join(repo, 'etc/default-libvirt'), 'utf8');
    expect(shipped).toMatch(/^VIRTUSER=qemu$/m);
    expect(shipped).toMatch(/^VIRTGROUP=kvm$/m);
    expect(shipped.replace(/^VIRTUSER=.*$/m, '').replace(/^VIRTGROUP=.*$/m, ''))
      .toBe(template.replace(/^VIRTUSER=.*$/m, '').replace(/^VIRTGROUP=.*$/m, ''));
  });

  it('ships a slack-desc of the SBo shape: the handy ruler, exactly 11 lines, none too long', () => {
    const text = readFileSync(join(pkg, 'install/slack-desc'), 'utf8');
    const lines = text.split('\n').filter((l) => l !== '');
    const ruler = lines.find((l) => l.includes('|-----handy-ruler'));
    expect(ruler).toBeDefined();
    expect((ruler as string).indexOf('|')).toBe('rc-libvirt'.length);
    const desc = lines.filter((l) => !l.startsWith('#') && l !== ruler);
    expect(desc).toHaveLength(11);
    for (const l of desc) {
      expect(l.startsWith('rc-libvirt:')).toBe(true);
      expect(l.length).toBeLessThanOrEqual(79);
      expect(l === 'rc-libvirt:' || l.startsWith('rc-libvirt: ')).toBe(true);
    }
    expect(desc[0]).toMatch(/^rc-libvirt: rc-libvirt \(.+\)$/);
  });

  it('ships a man page that renders without warnings', () => {
    const r = spawnSync('sh', ['-c', `gzip -dc '${join(pkg, 'usr/man/man8/rc.libvirt.8.gz')}' | groff -man -ww -Tutf8`], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('rc.libvirt');
  });
});

describe('doinst.sh', () => {
  it('fresh install: the .new files become the real ones, the rc script executable', () => {
    const root = join(dir, 'fresh');
    installInto(root);
    expect(mode(join(root, 'etc/rc.d/rc.libvirt'))).toBe(0o755);
    expect(readFileSync(join(root, 'etc/rc.d/rc.libvirt'), 'utf8')).toContain('# rc-libvirt shim');
    expect(readFileSync(join(root, 'etc/default/libvirt'), 'utf8')).toMatch(/^VIRTUSER=qemu$/m);
    expect(existsSync(join(root, 'etc/rc.d/rc.libvirt.new'))).toBe(false);
    expect(existsSync(join(root, 'etc/default/libvirt.new'))).toBe(false);
  });

  it('the installed rc script runs the installed program (out of the source tree)', () => {
    const root = join(dir, 'fresh');
    const env = { RC_LIBVIRT_BUNDLE: join(root, 'usr/libexec/rc-libvirt/rc.libvirt'), PATH: '/usr/bin:/bin' };
    const help = run([join(root, 'etc/rc.d/rc.libvirt'), '--help'], { cwd: root, env });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('guests_shutdown');
    const bad = run([join(root, 'etc/rc.d/rc.libvirt'), 'bogus'], { cwd: root, env });
    expect(bad.status).toBe(2);
  });

  it('upgrade: the edited settings survive and the new ones wait as .new', () => {
    const ours = readFileSync(join(repo, 'rc/rc.libvirt'), 'utf8');
    const edited = 'TIMEOUT=900\nVIRTUSER=qemu\nVIRTGROUP=kvm\n';
    const root = oldRoot('upgrade-edited', ours, 0o755, edited);
    installInto(root);
    expect(readFileSync(join(root, 'etc/default/libvirt'), 'utf8')).toBe(edited);
    expect(readFileSync(join(root, 'etc/default/libvirt.new'), 'utf8')).toBe(readFileSync(join(pkg, 'etc/default/libvirt.new'), 'utf8'));
    // The same rc script: nothing waits beside it.
    expect(existsSync(join(root, 'etc/rc.d/rc.libvirt.new'))).toBe(false);
    expect(mode(join(root, 'etc/rc.d/rc.libvirt'))).toBe(0o755);
  });

  it('upgrade: unedited settings leave no .new behind', () => {
    const ours = readFileSync(join(repo, 'rc/rc.libvirt'), 'utf8');
    const root = oldRoot('upgrade-unedited', ours, 0o755, readFileSync(join(pkg, 'etc/default/libvirt.new'), 'utf8'));
    installInto(root);
    expect(existsSync(join(root, 'etc/default/libvirt.new'))).toBe(false);
  });

  for (const rcMode of [0o644, 0o755]) {
    it(`upgrade of rc-libvirt: a changed rc script waits as .new with the mode ${rcMode.toString(8)} of the one in place`, () => {
      const older = `${readFileSync(join(repo, 'rc/rc.libvirt'), 'utf8')}# an older version\n`;
      const root = oldRoot(`upgrade-rc-${rcMode.toString(8)}`, older, rcMode);
      installInto(root);
      expect(readFileSync(join(root, 'etc/rc.d/rc.libvirt'), 'utf8')).toBe(older);
      expect(mode(join(root, 'etc/rc.d/rc.libvirt'))).toBe(rcMode);
      expect(mode(join(root, 'etc/rc.d/rc.libvirt.new'))).toBe(rcMode);
    });

    it(`upgrade from libvirt's shell rc.libvirt (mode ${rcMode.toString(8)}): ours replaces it, keeps the mode, sets it aside`, () => {
      const root = oldRoot(`from-shell-${rcMode.toString(8)}`, shellRcLibvirt, rcMode);
      const said = installInto(root);
      const rc = join(root, 'etc/rc.d/rc.libvirt');
      expect(readFileSync(rc, 'utf8')).toContain('# rc-libvirt shim');
      expect(mode(rc)).toBe(rcMode);
      expect(readFileSync(join(root, 'etc/rc.d/rc.libvirt.shell'), 'utf8')).toBe(shellRcLibvirt);
      expect(mode(join(root, 'etc/rc.d/rc.libvirt.shell')) & 0o111).toBe(0);
      expect(existsSync(join(root, 'etc/rc.d/rc.libvirt.new'))).toBe(false);
      expect(said).toContain('/etc/rc.d/rc.libvirt.shell');
    });
  }

  it('a second shell script to set aside does not overwrite the first copy', () => {
    const root = oldRoot('from-shell-twice', shellRcLibvirt, 0o755);
    writeFileSync(join(root, 'etc/rc.d/rc.libvirt.shell'), 'the first copy\n');
    installInto(root);
    expect(readFileSync(join(root, 'etc/rc.d/rc.libvirt.shell'), 'utf8')).toBe('the first copy\n');
    expect(readFileSync(join(root, 'etc/rc.d/rc.libvirt.shell.1'), 'utf8')).toBe(shellRcLibvirt);
  });
});
