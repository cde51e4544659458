// Slackware's package tools, as far as a package's install/doinst.sh and install/douninst.sh see them,
// on a temporary root. Debian has no pkgtools: this follows their sources in Slackware 15.0
// (source/a/pkgtools/scripts/{installpkg,removepkg,upgradepkg}), step for step where the scripts can
// tell a difference:
// - installpkg unpacks the package into ROOT, then runs install/doinst.sh from ROOT (`cd $ROOT/; ... |
//   /bin/bash`), except in upgradepkg's pre-install pass (PRE_INSTALL_PASS=true); it keeps the file list
//   in var/lib/pkgtools/packages/NAME and install/douninst.sh as var/lib/pkgtools/douninst.sh/NAME.
// - removepkg deletes the files of the package that no other installed package lists, moves its entry
//   to var/log/pkgtools/removed_packages, and only then runs the douninst.sh it saved, from ROOT
//   (`cd $ROOT/ ; sh $TMP/$PKGNAME`), found as douninst.sh/NAME or, for NAME-upgraded-*, under NAME.
// - upgradepkg renames the old entries NAME-upgraded-TIMESTAMP, pre-installs the new package (no
//   doinst.sh), removes the old package with removepkg (whose douninst.sh therefore runs: upgradepkg
//   does not pass --skip-douninst), then installs the new package again (--no-overwrite: tar's
//   --skip-old-files), now running its doinst.sh.
//   With --no-paranoia, the one install runs doinst.sh, before the old package is removed.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** A package: its name as installpkg records it (name-version-arch-build) and its unpacked tree. */
export interface Package {
  name: string;
  tree: string;
}

const DB = 'var/lib/pkgtools';

function sh(argv: string[], cwd: string): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), { cwd, encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} (in ${cwd}) exited ${r.status}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

// Every file and symlink of the tree, relative, install/ aside.
function filesOf(tree: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else out.push(relative(tree, full));
    }
  };
  walk(tree);
  return out.filter((f) => !f.startsWith('install/')).sort();
}

/** The base name of a package: NAME of NAME-VERSION-ARCH-BUILD (as removepkg's package_name). */
export function baseName(name: string): string {
  return name.split('-').slice(0, -3).join('-');
}

/** installpkg PKG with ROOT=root; the output of doinst.sh. */
export function installpkg(root: string, pkg: Package, opts: { preInstallPass?: boolean; noOverwrite?: boolean } = {}): string {
  mkdirSync(root, { recursive: true });
  cpSync(pkg.tree, root, { recursive: true, preserveTimestamps: true, force: !opts.noOverwrite });
  if (opts.noOverwrite) cpSync(join(pkg.tree, 'install'), join(root, 'install'), { recursive: true, force: true });
  let said = '';
  if (existsSync(join(root, 'install/doinst.sh')) && !opts.preInstallPass) said = sh(['/bin/bash', 'install/doinst.sh'], root);
  for (const d of ['packages', 'scripts', 'douninst.sh']) mkdirSync(join(root, DB, d), { recursive: true });
  const list = filesOf(pkg.tree);
  if (existsSync(join(root, 'install/doinst.sh'))) cpSync(join(root, 'install/doinst.sh'), join(root, DB, 'scripts', pkg.name));
  if (existsSync(join(root, 'install/douninst.sh'))) {
    cpSync(join(root, 'install/douninst.sh'), join(root, DB, 'douninst.sh', pkg.name));
    list.push(`${DB}/douninst.sh/${pkg.name}`);
  }
  writeFileSync(join(root, DB, 'packages', pkg.name), `PACKAGE NAME: ${pkg.name}\nFILE LIST:\n${list.join('\n')}\n`);
  rmSync(join(root, 'install'), { recursive: true, force: true });
  return said;
}

function listOf(root: string, entry: string): string[] {
  const text = readFileSync(join(root, DB, 'packages', entry), 'utf8');
  return text.slice(text.indexOf('FILE LIST:\n') + 'FILE LIST:\n'.length).split('\n').filter(Boolean);
}

/** removepkg NAME with ROOT=root; the output of douninst.sh. */
export function removepkg(root: string, entry: string): string {
  const uninstall = [join(root, DB, 'douninst.sh', entry), join(root, DB, 'douninst.sh', entry.replace(/-upgraded.*/, ''))].find((f) => existsSync(f));
  const saved = uninstall === undefined ? undefined : readFileSync(uninstall);
  const others = new Set(readdirSync(join(root, DB, 'packages')).filter((e) => e !== entry).flatMap((e) => listOf(root, e)));
  for (const f of listOf(root, entry)) if (!others.has(f)) rmSync(join(root, f), { force: true });
  mkdirSync(join(root, 'var/log/pkgtools/removed_packages'), { recursive: true });
  renameSync(join(root, DB, 'packages', entry), join(root, 'var/log/pkgtools/removed_packages', entry));
  if (saved === undefined) return '';
  const script = join(root, 'var/log/setup/tmp', entry);
  mkdirSync(join(root, 'var/log/setup/tmp'), { recursive: true });
  writeFileSync(script, saved);
  const said = sh(['sh', script], root);
  rmSync(script);
  return said;
}

/** upgradepkg [--no-paranoia] PKG with ROOT=root; what the scripts said, in order. */
export function upgradepkg(root: string, pkg: Package, opts: { noParanoia?: boolean } = {}): string {
  const stamp = `upgraded-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;
  const old = readdirSync(join(root, DB, 'packages')).filter((e) => baseName(e) === baseName(pkg.name));
  for (const e of old) {
    renameSync(join(root, DB, 'packages', e), join(root, DB, 'packages', `${e}-${stamp}`));
    if (existsSync(join(root, DB, 'scripts', e))) renameSync(join(root, DB, 'scripts', e), join(root, DB, 'scripts', `${e}-${stamp}`));
  }
  let said = installpkg(root, pkg, { preInstallPass: !opts.noParanoia });
  for (const e of old) said += removepkg(root, `${e}-${stamp}`);
  if (!opts.noParanoia) said += installpkg(root, pkg, { noOverwrite: true });
  return said;
}

/** The mode bits of PATH. */
export function modeOf(path: string): number {
  return statSync(path).mode & 0o7777;
}
