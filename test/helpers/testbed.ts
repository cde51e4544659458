// Where the test bed lives (the cached test guest, the QEMU and libvirt
// programs) and a check that fails loudly, naming the fix, when it is missing.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findProgram } from './process.js';

// The command that builds the test bed; every "missing" error names it.
export const SETUP_COMMAND = 'node testbed/setup.mjs';

// The repository's root folder.
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

// The folder testbed/setup.mjs builds the test guest into (RCL_TESTGUEST_DIR overrides, as for setup.mjs).
export const guestDir = process.env.RCL_TESTGUEST_DIR ?? join(repoRoot, '.cache', 'testguest');

// The test guest's kernel (Debian's cloud kernel).
export const kernelPath = join(guestDir, 'vmlinuz');

// The test guest's busybox initramfs (testbed/guest/init is its /init).
export const initrdPath = join(guestDir, 'initrd.gz');

/** Absolute paths of the programs the integration tests run. */
export interface TestbedPrograms {
  qemu: string;
  virsh: string;
  libvirtd: string;
  virtlogd: string;
  virtlockd: string;
  flock: string;
}

// Checks that the test bed is there (root, programs, guest, libvirt config) and throws an Error naming `node testbed/setup.mjs` if not; call it in beforeAll so tests fail, never skip.
export function requireTestbed(): TestbedPrograms {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('the integration tests must run as root');
  const find = (name: string): string => {
    const p = findProgram(name);
    if (!p) problems.push(`${name} is not installed`);
    return p ?? name;
  };
  const programs: TestbedPrograms = {
    qemu: find('qemu-system-x86_64'),
    virsh: find('virsh'),
    libvirtd: find('libvirtd'),
    virtlogd: find('virtlogd'),
    virtlockd: find('virtlockd'),
    flock: find('flock'),
  };
  for (const f of [kernelPath, initrdPath, '/etc/libvirt/libvirtd.conf', '/etc/libvirt/qemu.conf']) {
    if (!existsSync(f)) problems.push(`${f} is missing`);
  }
  if (problems.length > 0) {
    throw new Error(`The test bed is not ready (${problems.join('; ')}). Run: ${SETUP_COMMAND}`);
  }
  return programs;
}
