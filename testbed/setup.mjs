#!/usr/bin/env node
// Prepares this machine for rc-libvirt's integration tests (Debian 12, as root):
//   1. installs QEMU, libvirt and the tools the tests use (apt);
//   2. prepares libvirtd to be run by hand as root, without systemd;
//   3. builds the test guest (a Debian cloud kernel and a busybox initramfs
//      running testbed/guest/init) into .cache/testguest/.
// Safe to run again: every step checks first and skips what is already done.
// Usage: node testbed/setup.mjs (after npm ci: it runs with zx, a devDependency)
// Environment: RCL_TESTGUEST_DIR overrides where the guest is built.
import { createHash } from 'node:crypto';
import {
  appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync,
  statSync, symlinkSync, utimesSync, writeFileSync,
} from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { holdLock } from '../scripts/lib/lock.mjs';

const SCRIPT = 'testbed/setup.mjs';
// zx comes with the npm packages: without them, say so rather than fail on the import.
const { runner, stopOnError } = await import('../scripts/lib/run.mjs').catch((err) => {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes("'zx'")) throw err;
  process.stderr.write(`${SCRIPT}: error: zx is not installed: run npm ci first (in ${resolve(dirname(fileURLToPath(import.meta.url)), '..')})\n`);
  process.exit(1);
});
const SELF = fileURLToPath(import.meta.url);
const REPO_ROOT = resolve(dirname(SELF), '..');
const GUEST_DIR = process.env.RCL_TESTGUEST_DIR || join(REPO_ROOT, '.cache/testguest');
const GUEST_INIT = join(REPO_ROOT, 'testbed/guest/init');
const KERNEL_META = 'linux-image-cloud-amd64';
const PACKAGES = ['qemu-system-x86', 'qemu-utils', 'libvirt-daemon', 'libvirt-daemon-driver-qemu',
  'libvirt-clients', 'busybox-static', 'cpio', 'groff-base', 'man-db', 'kmod', 'procps', 'util-linux', 'time'];
const BACKUP_SUFFIX = '.rcl-testbed.orig';
const LOCK = '/run/rc-libvirt-testbed-setup.lock';

const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' };
// Quiet commands (their output only in an error) and loud ones (apt: shown as they run).
const run = runner({ env });
const loud = runner({ env, verbose: true });
const probe = runner({ env, nothrow: true });

const say = (text) => process.stdout.write(`==> ${text}\n`);
const note = (...lines) => process.stdout.write(`    ${lines.join(' ')}\n`);
const die = (msg) => {
  throw new Error(msg);
};

// One setup at a time on this host (apt and a shared .cache would clash).
function takeLock() {
  const fd = holdLock(LOCK, { waitSeconds: 1800, onWait: () => say(`waiting for another ${SCRIPT} to finish`) });
  if (fd === undefined) die(`another ${SCRIPT} has run for 30 minutes`);
}

let aptUpdated = false;
async function aptUpdateOnce() {
  if (aptUpdated) return;
  say('apt-get update');
  await loud`apt-get update -q`;
  aptUpdated = true;
}

async function installPackages() {
  const r = await probe`dpkg-query -W -f=${'${Package} ${Status}\n'} ${PACKAGES}`;
  const installed = new Set(r.stdout.split('\n').filter((l) => l.endsWith(' install ok installed')).map((l) => l.split(' ')[0]));
  const missing = PACKAGES.filter((p) => !installed.has(p));
  if (missing.length === 0) {
    say(`packages: all ${PACKAGES.length} present, nothing to install`);
    return;
  }
  say(`packages: installing ${missing.join(' ')}`);
  await aptUpdateOnce();
  await loud`apt-get install -y -q --no-install-recommends ${PACKAGES}`;
}

// Files this run created or already backed up: no (further) backup needed.
const touched = new Set();

// Keeps one copy of FILE as it was before this script first changed it (mode and times kept).
function backupOnce(file) {
  if (touched.has(file)) return;
  touched.add(file);
  const backup = `${file}${BACKUP_SUFFIX}`;
  if (existsSync(file) && statSync(file).size > 0 && !existsSync(backup)) {
    copyFileSync(file, backup);
    const st = statSync(file);
    chmodSync(backup, st.mode & 0o7777);
    utimesSync(backup, st.atime, st.mtime);
    note(`backup: ${backup}`);
  }
}

// Sets KEY = VALUE in a libvirt-style config FILE: changes every active setting of KEY, else
// appends one. Leaves the file alone when it already says so (its last active setting counts).
function setConf(file, key, value) {
  const text = readFileSync(file, 'utf8');
  const active = new RegExp(`^\\s*${key}\\s*=`);
  const current = text.split('\n').map((l) => new RegExp(`^\\s*${key}\\s*=\\s*(.*\\S)\\s*$`).exec(l)?.[1]).filter(Boolean).at(-1);
  if (current === value) {
    note(`${file}: ${key} = ${value} (already)`);
    return;
  }
  backupOnce(file);
  if (current !== undefined) {
    writeFileSync(file, text.split('\n').map((l) => (active.test(l) ? `${key} = ${value}` : l)).join('\n'));
    note(`${file}: ${key} = ${value} (was ${current})`);
  } else {
    appendFileSync(file, `${text === '' || text.endsWith('\n') ? '' : '\n'}${key} = ${value}\n`);
    note(`${file}: ${key} = ${value} (added)`);
  }
}

async function prepareLibvirt() {
  say('libvirt: preparing to run libvirtd by hand as root');
  if ((await probe`id -u libvirt-qemu`).exitCode === 0) {
    note('user libvirt-qemu exists');
  } else {
    await run`useradd -r -M -s /usr/sbin/nologin libvirt-qemu`;
    note("user libvirt-qemu created (libvirtd's QEMU driver needs it)");
  }

  mkdirSync('/etc/libvirt', { recursive: true });
  for (const conf of ['libvirtd', 'virtlogd', 'virtlockd', 'qemu']) {
    const file = `/etc/libvirt/${conf}.conf`;
    if (!existsSync(file)) {
      writeFileSync(file, '');
      touched.add(file);
      note(`${file} created (empty; the daemons die without it)`);
    }
  }
  // rc.libvirt runs `libvirtd -l`: without certificates TLS must be off.
  setConf('/etc/libvirt/libvirtd.conf', 'listen_tls', '0');
  // Guests run as root (no libvirt-qemu-owned storage here).
  setConf('/etc/libvirt/qemu.conf', 'user', '"root"');
  setConf('/etc/libvirt/qemu.conf', 'group', '"root"');

  const dirs = ['/var/log/libvirt', '/var/lib/libvirt/qemu/save', '/run/libvirt'];
  for (const d of dirs) mkdirSync(d, { recursive: true });
  note(`directories: ${dirs.join(' ')}`);

  // Debian's libvirt-daemon-config-network autostarts the 'default' network, which needs
  // dnsmasq. Without it libvirtd only logs an error and starts anyway, so this is left as it is.
  if (existsSync('/etc/libvirt/qemu/networks/autostart/default.xml')) {
    if ((await probe`command -v dnsmasq`).exitCode === 0) {
      note("network 'default' autostarts (dnsmasq present)");
    } else {
      note("network 'default' autostarts without dnsmasq: libvirtd logs an error, harmless");
    }
  }
}

// The exact kernel package behind the meta package, e.g. linux-image-6.1.0-56-cloud-amd64 (or undefined).
async function kernelPackage() {
  const r = await probe`apt-cache depends ${KERNEL_META}`;
  return r.stdout.split('\n').map((l) => /^\s*Depends: (linux-image-[0-9]\S*)$/.exec(l)?.[1]).find(Boolean);
}

// Every file under DIR, recursively (paths), in directory order.
function walk(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path, e.name));
}

// A module name's pattern: modules.dep and file names mix - and _.
const moduleNamePattern = (name) => name.replace(/[-_]/g, '[-_]');

// Copies the module REL (path under kernel/, without .ko) and, first, its dependencies into
// the initramfs, appending each to the load order once.
async function addModule(modroot, rel, initrdRoot, modules) {
  const prefix = join(modroot, 'kernel', `${rel}.ko`);
  const file = modules.find((f) => f.startsWith(prefix));
  const loadOrder = join(initrdRoot, 'lib/modules/load-order');
  if (file === undefined) {
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    const builtin = existsSync(join(modroot, 'modules.builtin')) ? readFileSync(join(modroot, 'modules.builtin'), 'utf8') : '';
    if (new RegExp(`/${moduleNamePattern(name)}\\.ko$`, 'm').test(builtin)) {
      note(`module ${rel}: built into the kernel`);
      return;
    }
    die(`module ${rel}: neither a module nor built in (kernel tree ${modroot})`);
  }
  const base = basename(file).replace(/\.ko.*$/, '');
  if (readFileSync(loadOrder, 'utf8').split('\n').includes(`${base}.ko`)) return;
  const deps = (await run`modinfo -F depends ${file}`).stdout.trim().split(',').filter(Boolean);
  for (const dep of deps) {
    const depPattern = new RegExp(`/${moduleNamePattern(dep)}\\.ko(\\.(xz|zst|gz))?$`);
    const depfile = modules.find((f) => depPattern.test(f));
    if (depfile === undefined) die(`module ${rel} needs ${dep}, which is not in ${modroot}`);
    await addModule(modroot, relative(join(modroot, 'kernel'), depfile).replace(/\.ko.*$/, ''), initrdRoot, modules);
  }
  const out = join(initrdRoot, 'lib/modules', `${base}.ko`);
  if (file.endsWith('.ko')) copyFileSync(file, out);
  else if (file.endsWith('.ko.xz')) await run`xz -dc ${file} > ${out}`;
  else if (file.endsWith('.ko.zst')) await run`zstd -dcq ${file} > ${out}`;
  else if (file.endsWith('.ko.gz')) await run`gzip -dc ${file} > ${out}`;
  else die(`module ${file}: unknown compression`);
  appendFileSync(loadOrder, `${base}.ko\n`);
  note(`module ${rel}: ${basename(file)}${deps.length > 0 ? ` (needs ${deps.join(' ')})` : ''}`);
}

const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');

// The first file in DIR whose name starts with PREFIX, or undefined.
const findIn = (dir, prefix) => readdirSync(dir).filter((f) => f.startsWith(prefix)).map((f) => join(dir, f))[0];

async function download(debs, kpkg) {
  return (await probe({ cwd: debs })`apt-get download -q -o APT::Sandbox::User=root ${kpkg}`).exitCode === 0;
}

async function buildGuest() {
  say(`test guest: ${GUEST_DIR}`);
  if (!existsSync(GUEST_INIT)) die(`missing ${GUEST_INIT}`);
  let kpkg = await kernelPackage();
  if (kpkg === undefined) {
    await aptUpdateOnce();
    kpkg = await kernelPackage();
  }
  if (kpkg === undefined) die(`apt-cache depends ${KERNEL_META} names no kernel package`);
  note(`kernel package: ${kpkg}`);

  const busybox = (await run`dpkg-query -W -f=${'${Version}'} busybox-static`).stdout;
  const stampWant = [`kernel=${kpkg}`, `busybox=${busybox}`, `init=${sha256(GUEST_INIT)}`, `setup=${sha256(SELF)}`].join('\n');
  const stampFile = join(GUEST_DIR, 'stamp');
  const nonEmpty = (f) => existsSync(f) && statSync(f).size > 0;
  if (nonEmpty(join(GUEST_DIR, 'vmlinuz')) && nonEmpty(join(GUEST_DIR, 'initrd.gz')) && existsSync(stampFile)
    && readFileSync(stampFile, 'utf8').trimEnd() === stampWant) {
    note('up to date (stamp matches), not rebuilding');
    return;
  }

  const debs = join(GUEST_DIR, 'debs');
  mkdirSync(debs, { recursive: true });
  let deb = findIn(debs, `${kpkg}_`);
  if (deb === undefined) {
    note(`downloading ${kpkg} (not installing it)`);
    if (!(await download(debs, kpkg))) {
      // The lists may name a version the mirror no longer has.
      await aptUpdateOnce();
      kpkg = (await kernelPackage()) ?? kpkg;
      await run({ cwd: debs })`apt-get download -q -o APT::Sandbox::User=root ${kpkg}`;
    }
    deb = findIn(debs, `${kpkg}_`);
    if (deb === undefined) die(`apt-get download ${kpkg} left no .deb`);
  } else {
    note(`using cached ${basename(deb)}`);
  }
  // Older kernel packages are of no use any more.
  for (const f of readdirSync(debs)) {
    if (f.startsWith('linux-image-') && f.endsWith('.deb') && !f.startsWith(`${kpkg}_`)) rmSync(join(debs, f));
  }
  const kver = kpkg.slice('linux-image-'.length);

  const work = join(GUEST_DIR, 'work');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  note('extracting with dpkg-deb -x');
  await run`dpkg-deb -x ${deb} ${join(work, 'kernel')}`;
  const modroot = join(work, 'kernel/lib/modules', kver);
  if (!existsSync(modroot)) die(`no ${modroot} in ${deb}`);

  const root = join(work, 'initramfs');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'fill', 'lib/modules']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'lib/modules/load-order'), '');
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), statSync('/bin/busybox').mode & 0o7777);
  symlinkSync('busybox', join(root, 'bin/sh'));
  copyFileSync(GUEST_INIT, join(root, 'init'));
  chmodSync(join(root, 'init'), 0o755);
  // The kernel opens /dev/console for /init before devtmpfs is mounted; /init redirects again
  // after mounting it, so this node is only a nicety.
  if ((await probe`mknod -m 0600 ${join(root, 'dev/console')} c 5 1`).exitCode !== 0) note('mknod refused: /init will redirect itself');
  const modules = walk(join(modroot, 'kernel'));
  await addModule(modroot, 'drivers/input/evdev', root, modules);
  await addModule(modroot, 'drivers/acpi/button', root, modules);

  note('packing initrd.gz (cpio -H newc, gzip)');
  const initrd = join(work, 'initrd.gz');
  await run({ cwd: root })`find . -print0 | LC_ALL=C sort -z | cpio --quiet --null -o -H newc -R 0:0 | gzip -9 > ${initrd}`;
  copyFileSync(join(work, 'kernel/boot', `vmlinuz-${kver}`), join(work, 'vmlinuz'));
  renameSync(join(work, 'vmlinuz'), join(GUEST_DIR, 'vmlinuz'));
  renameSync(initrd, join(GUEST_DIR, 'initrd.gz'));
  rmSync(work, { recursive: true, force: true });
  writeFileSync(stampFile, `${stampWant}\n`);
  const size = async (f) => (await run`du -h ${f}`).stdout.split('\t')[0];
  note(`built ${join(GUEST_DIR, 'vmlinuz')} (${await size(join(GUEST_DIR, 'vmlinuz'))})`,
    `and ${join(GUEST_DIR, 'initrd.gz')} (${await size(join(GUEST_DIR, 'initrd.gz'))})`);
}

await stopOnError(SCRIPT, async () => {
  if (process.getuid?.() !== 0) die('run me as root (I install packages and write /etc/libvirt)');
  takeLock();
  await installPackages();
  await prepareLibvirt();
  await buildGuest();
  say('done: the integration tests can run (npx vitest run --project integration)');
});
