// slackbuild/ and scripts/release.mjs, the SBo way: `npm run release` makes rc-libvirt-VERSION.tar.gz
// from this checkout (with --no-build: it packs the dist/rc.libvirt that `npm test` or `npm run build`
// made, so the suite does not rebuild it under other tests); the SlackBuild, in a directory with the
// tarball beside it, builds the package offline (no network namespace, an npm, node and git on PATH
// that fail if run) and the package tree is checked path by path. doinst.sh and douninst.sh then run
// on temporary roots that already hold libvirt's rc.libvirt, in the order Slackware's installpkg,
// upgradepkg and removepkg run them: test/helpers/pkgtools.ts follows those tools' sources.
// Debian has no makepkg: the SlackBuild stops before it (MAKEPKG=no) and its package tree stands in
// for the package.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installpkg, modeOf, removepkg, upgradepkg, type Package } from '../helpers/pkgtools.js';

const repo = join(import.meta.dirname, '../..');
const slackbuild = join(repo, 'slackbuild/rc-libvirt.SlackBuild');
const bundle = join(repo, 'dist/rc.libvirt');
const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
const top = `rc-libvirt-${version}`;
const doc = `usr/doc/rc-libvirt-${version}`;
const SBO_FILES = ['rc-libvirt.SlackBuild', 'rc-libvirt.info', 'README', 'slack-desc', 'doinst.sh', 'douninst.sh'];

let dir: string;
let sbo: string;
let tarball: string;
let released: Run;
let built: Run;
let pkg: string;
let noTools: string;

interface Run { status: number | null; stdout: string; stderr: string }

function run(argv: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    cwd: opts.cwd ?? repo,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: 120_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const ok = (r: Run): Run => {
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
};

// The release script on this checkout, into OUT, writing the md5 into INFO.
function release(out: string, info: string, env: Record<string, string> = {}): Run {
  return run(['node', 'scripts/release.mjs', '--no-build', '--out', out, '--info', info], { env });
}

// The SlackBuild at SCRIPT, offline: no network, and npm, npx, node and git fail if anything runs them.
function runSlackBuild(script: string, env: Record<string, string>): Run {
  return run(['unshare', '--net', 'bash', script], { env: { MAKEPKG: 'no', PATH: `${noTools}:/usr/sbin:/usr/bin:/sbin:/bin`, ...env } });
}

const md5 = (path: string): string => createHash('md5').update(readFileSync(path)).digest('hex');
const text = (path: string): string => readFileSync(path, 'utf8');

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rcl-slackbuild-'));
  expect(existsSync(bundle), `${bundle} is missing: run "npm run build" first (npm test does)`).toBe(true);
  noTools = join(dir, 'no-tools');
  mkdirSync(noTools);
  for (const tool of ['npm', 'npx', 'node', 'git']) {
    writeFileSync(join(noTools, tool), `#!/bin/sh\necho "${tool} must not run: $*" >&2\nexit 1\n`);
    chmodSync(join(noTools, tool), 0o755);
  }
  // The SBo layout: the SlackBuild's directory, the release tarball downloaded into it.
  sbo = join(dir, 'sbo');
  mkdirSync(sbo);
  for (const f of SBO_FILES) cpSync(join(repo, 'slackbuild', f), join(sbo, f));
  released = ok(release(sbo, join(sbo, 'rc-libvirt.info')));
  tarball = join(sbo, `${top}.tar.gz`);
  built = runSlackBuild(join(sbo, 'rc-libvirt.SlackBuild'), { TMP: join(dir, 'tmp'), OUTPUT: join(dir, 'out'), VIRTUSER: 'qemu', VIRTGROUP: 'kvm' });
  ok(built);
  pkg = join(dir, 'tmp/package-rc-libvirt');
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('npm run release', () => {
  it('is the release script, run with node (zx is a devDependency)', () => {
    const manifest = JSON.parse(text(join(repo, 'package.json'))) as { scripts: Record<string, string>; devDependencies: Record<string, string> };
    expect(manifest.scripts.release).toBe('node scripts/release.mjs');
    expect(manifest.devDependencies.zx).toBeDefined();
  });

  it(`makes ${top}.tar.gz: the files git tracks but the .info, and the prebuilt program, all under ${top}/`, () => {
    const entries = ok(run(['tar', '-tzf', tarball])).stdout.split('\n').filter(Boolean);
    const files = entries.filter((e) => !e.endsWith('/'));
    const tracked = ok(run(['git', 'ls-files'])).stdout.split('\n').filter((f) => f !== '' && f !== 'slackbuild/rc-libvirt.info');
    expect(files.sort()).toEqual([...tracked, 'dist/rc.libvirt', 'dist/package.json'].map((f) => `${top}/${f}`).sort());
    for (const e of entries) expect(e.startsWith(`${top}/`), e).toBe(true);
    expect(entries.filter((e) => /(^|\/)(node_modules|\.cache|\.git)\//.test(e))).toEqual([]);
    expect(ok(run(['tar', '-xzOf', tarball, `${top}/dist/rc.libvirt`])).stdout).toBe(text(bundle));
  });

  it('is reproducible: entries sorted, every mtime the date of the last commit but the .info\'s, owner and group 0, gzip without a date', () => {
    const listing = ok(run(['tar', '-tvzf', tarball, '--numeric-owner', '--full-time'], { env: { TZ: 'UTC' } })).stdout.split('\n').filter(Boolean);
    const names = listing.map((l) => l.split(/\s+/).slice(5).join(' '));
    // GNU tar's --sort=name: each directory's entries by name, a directory's contents right after it.
    const byComponents = (a: string, b: string): number => {
      const [x, y] = [a.replace(/\/$/, '').split('/'), b.replace(/\/$/, '').split('/')];
      for (let i = 0; i < Math.min(x.length, y.length); i++) {
        const c = Buffer.compare(Buffer.from(x[i] as string), Buffer.from(y[i] as string));
        if (c !== 0) return c;
      }
      return x.length - y.length;
    };
    expect(names).toEqual([...names].sort(byComponents));
    const commit = Number(ok(run(['git', 'log', '-1', '--format=%ct', '--', '.', ':(exclude)slackbuild/rc-libvirt.info'])).stdout.trim());
    const when = new Date(commit * 1000).toISOString().replace('T', ' ').replace(/\.000Z$/, '');
    for (const line of listing) {
      const [perms, owner, , day, time] = line.split(/\s+/);
      expect([owner, `${day} ${time}`], line).toEqual(['0/0', when]);
      expect(perms, line).toMatch(/^(drwxr-xr-x|-rw-r--r--|-rwxr-xr-x)$/);
    }
    expect(readFileSync(tarball).readUInt32LE(4)).toBe(0);
    // Again, with the date given as SOURCE_DATE_EPOCH and a .info that now holds the md5: the same bytes.
    const again = join(dir, 'again');
    mkdirSync(again);
    cpSync(join(sbo, 'rc-libvirt.info'), join(again, 'rc-libvirt.info'));
    ok(release(again, join(again, 'rc-libvirt.info'), { SOURCE_DATE_EPOCH: String(commit) }));
    expect(md5(join(again, `${top}.tar.gz`))).toBe(md5(tarball));
  });

  it('prints the md5 and sha256 and writes the md5, and only it, into the .info', () => {
    const sum = md5(tarball);
    const sha = createHash('sha256').update(readFileSync(tarball)).digest('hex');
    expect(released.stdout).toMatch(new RegExp(`^md5 +${sum}$`, 'm'));
    expect(released.stdout).toMatch(new RegExp(`^sha256 +${sha}$`, 'm'));
    const info = text(join(sbo, 'rc-libvirt.info'));
    expect(info).toMatch(new RegExp(`^MD5SUM="${sum}"$`, 'm'));
    expect(info.replace(/^MD5SUM=.*$/m, '')).toBe(text(join(repo, 'slackbuild/rc-libvirt.info')).replace(/^MD5SUM=.*$/m, ''));
  });

  it('stops at a failed command, naming it with its output, and writes nothing', () => {
    const bin = join(dir, 'failing-tar');
    mkdirSync(bin);
    writeFileSync(join(bin, 'tar'), '#!/bin/sh\necho "tar: the disk is full" >&2\nexit 2\n');
    chmodSync(join(bin, 'tar'), 0o755);
    const out = join(dir, 'failed');
    mkdirSync(out);
    const info = join(out, 'rc-libvirt.info');
    cpSync(join(repo, 'slackbuild/rc-libvirt.info'), info);
    const r = release(out, info, { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^release: "tar --sort=name .*" failed \(exit 2\):\ntar: the disk is full$/m);
    expect(readdirSync(out)).toEqual(['rc-libvirt.info']);
    expect(text(info)).toBe(text(join(repo, 'slackbuild/rc-libvirt.info')));
  });
});

describe('rc-libvirt.SlackBuild', () => {
  it('prints the package name with PRINT_PACKAGE_NAME and builds nothing', () => {
    const tmp = join(dir, 'print-tmp');
    const r = run(['bash', slackbuild], { env: { PRINT_PACKAGE_NAME: '1', TMP: tmp, OUTPUT: tmp } });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`rc-libvirt-${version}-noarch-1_SBo.tgz\n`);
    expect(existsSync(tmp)).toBe(false);
  });

  it('has the version of package.json, as does the .info, whose DOWNLOAD names the release tarball', () => {
    expect(text(slackbuild)).toContain(`VERSION=\${VERSION:-${version}}`);
    const info = text(join(repo, 'slackbuild/rc-libvirt.info'));
    expect(info).toContain(`VERSION="${version}"`);
    expect(info).toMatch(/^REQUIRES="libvirt nodejs"$/m);
    expect(info).toMatch(new RegExp(`^DOWNLOAD=".*${top}\\.tar\\.gz.*"$`, 'm'));
  });

  it('refuses a VIRTUSER that is not a name', () => {
    const tmp = join(dir, 'bad-user-tmp');
    const r = run(['bash', slackbuild], { env: { VIRTUSER: 'root; rm -rf /', TMP: tmp, OUTPUT: tmp, MAKEPKG: 'no' } });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('VIRTUSER/VIRTGROUP must be a user or group name');
  });

  it('builds from the release tarball beside it offline: no network, no npm, node or git, no node_modules', () => {
    expect(built.stdout).toContain('makepkg skipped');
    expect(built.stderr).not.toContain('must not run');
    expect(existsSync(join(dir, 'tmp', top, 'dist/rc.libvirt'))).toBe(true);
    expect(existsSync(join(dir, 'tmp', top, 'node_modules'))).toBe(false);
    expect(text(join(pkg, 'usr/libexec/rc-libvirt/rc.libvirt'))).toBe(text(bundle));
  });

  it('makes a package of exactly these paths, modes and owners', () => {
    const listing = ok(run(['find', '.', '-mindepth', '1', '-printf', '%P %y %m %U:%G\n'], { cwd: pkg })).stdout.split('\n').filter(Boolean).sort();
    const dirs = ['etc', 'etc/default', 'etc/rc.d', 'install', 'usr', 'usr/doc', doc, 'usr/libexec', 'usr/libexec/rc-libvirt', 'usr/man', 'usr/man/man8'];
    const files: [string, number][] = [
      ['etc/default/libvirt.new', 0o644],
      ['etc/rc.d/rc.libvirt.new', 0o755],
      ['install/doinst.sh', 0o644],
      ['install/douninst.sh', 0o644],
      ['install/slack-desc', 0o644],
      [`${doc}/README`, 0o644],
      [`${doc}/README.md`, 0o644],
      [`${doc}/rc-libvirt.SlackBuild`, 0o644],
      [`${doc}/slackware.md`, 0o644],
      ['usr/libexec/rc-libvirt/package.json', 0o644],
      ['usr/libexec/rc-libvirt/rc.libvirt', 0o755],
      ['usr/man/man8/rc.libvirt.8.gz', 0o644],
    ];
    expect(listing).toEqual([...dirs.map((d) => `${d} d 755 0:0`), ...files.map(([f, m]) => `${f} f ${m.toString(8)} 0:0`)].sort());
  });

  it('packages the files of the tarball as they are', () => {
    const src = join(dir, 'tmp', top);
    expect(text(join(pkg, 'etc/rc.d/rc.libvirt.new'))).toBe(text(join(src, 'rc/rc.libvirt')));
    expect(text(join(src, 'rc/rc.libvirt'))).toBe(text(join(repo, 'rc/rc.libvirt')));
    expect(text(join(pkg, 'usr/libexec/rc-libvirt/package.json'))).toBe('{ "type": "commonjs" }\n');
    for (const [inPkg, inSbo] of [['install/doinst.sh', 'doinst.sh'], ['install/douninst.sh', 'douninst.sh'], ['install/slack-desc', 'slack-desc'], [`${doc}/rc-libvirt.SlackBuild`, 'rc-libvirt.SlackBuild'], [`${doc}/README`, 'README']]) {
      expect(text(join(pkg, inPkg as string)), inPkg).toBe(text(join(repo, 'slackbuild', inSbo as string)));
    }
    expect(text(join(pkg, `${doc}/slackware.md`))).toBe(text(join(repo, 'docs/slackware.md')));
  });

  it('ships settings that set nothing and name the VIRTUSER and VIRTGROUP of the build in a comment', () => {
    const shipped = text(join(pkg, 'etc/default/libvirt.new'));
    const template = text(join(repo, 'etc/default-libvirt'));
    expect(shipped.split('\n').filter((l) => /^[A-Z_]+=/.test(l))).toEqual([]);
    const said = /^# rc-libvirt's SlackBuild ran with VIRTUSER=.*$/m;
    expect(shipped.match(said)?.[0]).toBe("# rc-libvirt's SlackBuild ran with VIRTUSER=qemu VIRTGROUP=kvm.");
    expect(shipped.replace(said, '')).toBe(template.replace(said, ''));
    expect(template).toMatch(/^#VIRTUSER=root$/m);
    expect(template).toMatch(/^#VIRTGROUP=users$/m);
  });

  it('ships a slack-desc of the SBo shape: the handy ruler, exactly 11 lines, none too long', () => {
    const lines = text(join(pkg, 'install/slack-desc')).split('\n').filter((l) => l !== '');
    const ruler = lines.find((l) => l.includes('|-----handy-ruler'));
    expect(ruler).toBeDefined();
    expect((ruler as string).indexOf('|')).toBe('rc-libvirt'.length);
    const desc = lines.filter((l) => !l.startsWith('#') && l !== ruler);
    expect(desc).toHaveLength(11);
    for (const l of desc) {
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

  it('from a checkout: packages the dist/rc.libvirt built there, offline, and with the default VIRTUSER the settings are the template', () => {
    const tmp = join(dir, 'checkout-tmp');
    const r = runSlackBuild(slackbuild, { TMP: tmp, OUTPUT: tmp });
    ok(r);
    expect(r.stderr).not.toContain('must not run');
    expect(text(join(tmp, 'package-rc-libvirt/usr/libexec/rc-libvirt/rc.libvirt'))).toBe(text(bundle));
    expect(text(join(tmp, 'package-rc-libvirt/etc/default/libvirt.new'))).toBe(text(join(repo, 'etc/default-libvirt')));
  });

  it('from a checkout without dist/rc.libvirt: stops and says how to get one', () => {
    const src = join(dir, 'unbuilt');
    mkdirSync(join(src, 'rc'), { recursive: true });
    cpSync(join(repo, 'package.json'), join(src, 'package.json'));
    cpSync(join(repo, 'rc/rc.libvirt'), join(src, 'rc/rc.libvirt'));
    const tmp = join(dir, 'unbuilt-tmp');
    const r = runSlackBuild(slackbuild, { TMP: tmp, OUTPUT: tmp, SRCDIR: src });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('the sources hold no dist/rc.libvirt');
    expect(r.stderr).toContain('"npm run release"');
    expect(r.stderr).toContain('"npm ci && npm run build"');
    expect(r.stderr).not.toContain('must not run');
  });
});

describe('doinst.sh and douninst.sh, run in the order of Slackware 15.0\'s installpkg, upgradepkg and removepkg', () => {
  const RC = 'etc/rc.d/rc.libvirt';
  const libvirtScript = (v: string): string => `#!/bin/bash\n# Slackware init script for libvirt ${v} (the shell one)\nTIMEOUT=\${TIMEOUT:-300}\n`;
  // libvirt's SBo doinst.sh: config() and preserve_perms() as every SlackBuild has them, for its rc.libvirt.new.
  const libvirtDoinst = `${text(join(repo, 'slackbuild/doinst.sh')).slice(0, text(join(repo, 'slackbuild/doinst.sh')).indexOf('# This package replaces'))}preserve_perms etc/rc.d/rc.libvirt.new\n`;
  let n = 0;

  function libvirtPackage(v: string): Package {
    const tree = join(dir, 'packages', `libvirt-${v}`);
    mkdirSync(join(tree, 'etc/rc.d'), { recursive: true });
    mkdirSync(join(tree, 'install'), { recursive: true });
    writeFileSync(join(tree, 'etc/rc.d/rc.libvirt.new'), libvirtScript(v));
    chmodSync(join(tree, 'etc/rc.d/rc.libvirt.new'), 0o755);
    writeFileSync(join(tree, 'install/doinst.sh'), libvirtDoinst);
    return { name: `libvirt-${v}-x86_64-1_SBo`, tree };
  }

  // Ours as built; VERSION as a later release of ours, whose program differs.
  function ours(v = version): Package {
    if (v === version) return { name: `rc-libvirt-${version}-noarch-1_SBo`, tree: pkg };
    const tree = join(dir, 'packages', `rc-libvirt-${v}`);
    if (!existsSync(tree)) {
      cpSync(pkg, tree, { recursive: true });
      writeFileSync(join(tree, 'usr/libexec/rc-libvirt/rc.libvirt'), `${text(bundle)}// ${v}\n`);
    }
    return { name: `rc-libvirt-${v}-noarch-1_SBo`, tree };
  }

  // A root where libvirt's package is installed and its rc.libvirt has MODE.
  function rootWithLibvirt(mode = 0o755): string {
    const root = join(dir, 'roots', String(n++));
    installpkg(root, libvirtPackage('11.0.0'));
    chmodSync(join(root, RC), mode);
    return root;
  }

  // An hour passes between two package operations: what is on disk gets older (`test -nt`, which picks the
  // newest of libvirt's scripts, tells whole seconds apart in dash).
  function later(root: string): void {
    for (const f of readdirSync(join(root, 'etc/rc.d'))) {
      const path = join(root, 'etc/rc.d', f);
      const then = (statSync(path).mtimeMs - 3600_000) / 1000;
      utimesSync(path, then, then);
    }
  }

  const isOurs = (path: string): boolean => text(path).includes('# rc-libvirt shim');

  for (const mode of [0o755, 0o644]) {
    it(`install, upgrade of ours, upgrade of libvirt, removal of ours: libvirt's newest script comes back with the mode ${mode.toString(8)}`, () => {
      const root = rootWithLibvirt(mode);
      expect(text(join(root, RC))).toBe(libvirtScript('11.0.0'));
      later(root);

      // installpkg rc-libvirt: ours in place with libvirt's mode, libvirt's set aside.
      const installed = installpkg(root, ours());
      expect(isOurs(join(root, RC))).toBe(true);
      expect(modeOf(join(root, RC))).toBe(mode);
      expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
      expect(modeOf(join(root, `${RC}.shell`)) & 0o111).toBe(0);
      expect(existsSync(join(root, `${RC}.new`))).toBe(false);
      expect(installed).toContain(`/${RC}.shell`);
      writeFileSync(join(root, 'etc/default/libvirt'), 'TIMEOUT=900\n');

      // upgradepkg rc-libvirt: the old douninst.sh runs between the two installs and changes nothing.
      const upgraded = upgradepkg(root, ours('9.9.9'));
      expect(upgraded).toBe('');
      expect(isOurs(join(root, RC))).toBe(true);
      expect(modeOf(join(root, RC))).toBe(mode);
      expect(text(join(root, 'usr/libexec/rc-libvirt/rc.libvirt'))).toContain('// 9.9.9');
      expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
      expect(text(join(root, 'etc/default/libvirt'))).toBe('TIMEOUT=900\n');
      expect(existsSync(join(root, `${RC}.new`))).toBe(false);
      later(root);

      // upgradepkg libvirt: its script waits beside ours as .new, with our mode.
      upgradepkg(root, libvirtPackage('11.1.0'));
      expect(isOurs(join(root, RC))).toBe(true);
      expect(text(join(root, `${RC}.new`))).toBe(libvirtScript('11.1.0'));
      expect(modeOf(join(root, `${RC}.new`))).toBe(mode);

      // removepkg rc-libvirt: the newest of libvirt's scripts is back, with the mode ours had.
      const removed = removepkg(root, ours('9.9.9').name);
      expect(existsSync(join(root, 'usr/libexec/rc-libvirt/rc.libvirt'))).toBe(false);
      expect(text(join(root, RC))).toBe(libvirtScript('11.1.0'));
      expect(modeOf(join(root, RC))).toBe(mode);
      expect(existsSync(join(root, `${RC}.new`))).toBe(false);
      expect(removed).toContain(`/${RC} is libvirt's script again (it was /${RC}.new)`);
      expect(removed).toContain(`/${RC}.shell is an older copy`);
      expect(text(join(root, 'etc/default/libvirt'))).toBe('TIMEOUT=900\n');
    });
  }

  it('removal with no libvirt upgrade in between: the copy kept as rc.libvirt.shell goes back', () => {
    const root = rootWithLibvirt(0o755);
    later(root);
    installpkg(root, ours());
    const said = removepkg(root, ours().name);
    expect(text(join(root, RC))).toBe(libvirtScript('11.0.0'));
    expect(modeOf(join(root, RC))).toBe(0o755);
    expect(existsSync(join(root, `${RC}.shell`))).toBe(false);
    expect(said).toContain(`it was /${RC}.shell)`);
  });

  it('upgradepkg --no-paranoia: the new doinst.sh runs first, then the old douninst.sh, which changes nothing', () => {
    const root = rootWithLibvirt(0o755);
    installpkg(root, ours());
    expect(upgradepkg(root, ours('9.9.8'), { noParanoia: true })).toBe('');
    expect(isOurs(join(root, RC))).toBe(true);
    expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
  });

  it('upgradepkg --reinstall: the douninst.sh that runs is the package\'s own, and changes nothing', () => {
    const root = rootWithLibvirt(0o755);
    installpkg(root, ours());
    expect(upgradepkg(root, ours())).toBe('');
    expect(isOurs(join(root, RC))).toBe(true);
    expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
    expect(readdirSync(join(root, 'var/lib/pkgtools/packages')).sort()).toEqual(['libvirt-11.0.0-x86_64-1_SBo', ours().name]);
  });

  it('removal where a newer script of ours waited as rc.libvirt.new: it goes, libvirt\'s comes back', () => {
    const root = rootWithLibvirt(0o755);
    later(root);
    installpkg(root, ours());
    // An older script of ours in place: the package's waits beside it.
    writeFileSync(join(root, RC), `${text(join(repo, 'rc/rc.libvirt'))}# an older version\n`);
    upgradepkg(root, ours('9.9.7'));
    expect(isOurs(join(root, `${RC}.new`))).toBe(true);
    const said = removepkg(root, ours('9.9.7').name);
    expect(text(join(root, RC))).toBe(libvirtScript('11.0.0'));
    expect(existsSync(join(root, `${RC}.new`))).toBe(false);
    expect(said).toContain(`it was /${RC}.shell)`);
  });

  it('removal with no copy of libvirt\'s script left: rc.libvirt stays and the message says what to do', () => {
    const root = join(dir, 'roots', 'no-libvirt');
    installpkg(root, ours());
    expect(isOurs(join(root, RC))).toBe(true);
    const said = removepkg(root, ours().name);
    expect(isOurs(join(root, RC))).toBe(true);
    expect(said).toContain('libvirt will not start at boot');
    expect(said).toContain(`upgradepkg --reinstall libvirt-*.t?z), then move /${RC}.new over /${RC}`);
  });

  it('the installed rc script runs the installed program (out of the source tree)', () => {
    const root = join(dir, 'roots', 'runs');
    installpkg(root, ours());
    const env = { RC_LIBVIRT_BUNDLE: join(root, 'usr/libexec/rc-libvirt/rc.libvirt'), PATH: '/usr/bin:/bin' };
    const help = run([join(root, RC), '--help'], { cwd: root, env });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('guests_shutdown');
    expect(run([join(root, RC), 'bogus'], { cwd: root, env }).status).toBe(2);
  });

  it('upgrade: unedited settings leave no .new behind', () => {
    const root = rootWithLibvirt();
    installpkg(root, ours());
    expect(text(join(root, 'etc/default/libvirt'))).toBe(text(join(pkg, 'etc/default/libvirt.new')));
    upgradepkg(root, ours('9.9.6'));
    expect(existsSync(join(root, 'etc/default/libvirt.new'))).toBe(false);
  });

  it('upgrade with edited settings: they stay, the new ones wait as .new', () => {
    const root = rootWithLibvirt();
    installpkg(root, ours());
    writeFileSync(join(root, 'etc/default/libvirt'), 'TIMEOUT=900\n');
    upgradepkg(root, ours('9.9.5'));
    expect(text(join(root, 'etc/default/libvirt'))).toBe('TIMEOUT=900\n');
    expect(text(join(root, 'etc/default/libvirt.new'))).toBe(text(join(pkg, 'etc/default/libvirt.new')));
  });

  for (const mode of [0o644, 0o755]) {
    it(`upgrade of ours over an older rc script of ours (mode ${mode.toString(8)}): the new one waits as .new with that mode`, () => {
      const root = rootWithLibvirt();
      installpkg(root, ours());
      const older = `${text(join(repo, 'rc/rc.libvirt'))}# an older version\n`;
      writeFileSync(join(root, RC), older);
      chmodSync(join(root, RC), mode);
      upgradepkg(root, ours('9.9.4'));
      expect(text(join(root, RC))).toBe(older);
      expect(modeOf(join(root, RC))).toBe(mode);
      expect(modeOf(join(root, `${RC}.new`))).toBe(mode);
    });
  }

  it('libvirt\'s script moved over ours by mistake: reinstalling ours sets it aside as rc.libvirt.shell.1, and removal brings back that newest one', () => {
    const root = rootWithLibvirt();
    later(root);
    installpkg(root, ours());
    later(root);
    upgradepkg(root, libvirtPackage('11.2.0'));
    cpSync(join(root, `${RC}.new`), join(root, RC));
    rmSync(join(root, `${RC}.new`));
    upgradepkg(root, ours());
    expect(isOurs(join(root, RC))).toBe(true);
    expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
    expect(text(join(root, `${RC}.shell.1`))).toBe(libvirtScript('11.2.0'));
    removepkg(root, ours().name);
    expect(text(join(root, RC))).toBe(libvirtScript('11.2.0'));
    expect(text(join(root, `${RC}.shell`))).toBe(libvirtScript('11.0.0'));
  });
});
