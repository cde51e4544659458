// Test guests for the qmp driver as definition files (QEMU_GUESTS_DIR), a
// driver over them, and cleanup of every QEMU they started (by checked PID).
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createQmpDriver } from '../../src/domain/qmp/qmp-driver.js';
import type { DomainDriver } from '../../src/domain/types.js';
import { consoleOffset, lastBootId, waitForGuestReady } from './console.js';
import { identifyPid, makeTempDir, terminateProcess } from './process.js';
import { initrdPath, kernelPath } from './testbed.js';

/** One qmp test guest. */
export interface QmpTestGuest {
  name: string;
  fill?: number;
  stubborn?: boolean;
  memMiB?: number;
  policy?: Record<string, unknown>;
  /** QEMU options added to the definition's argv (e.g. `-runas nobody`). */
  extraArgv?: string[];
  /** `start` boots it (the definition's `autostart`); default false. */
  autostart?: boolean;
}

/** A folder of qmp guests: definitions, runtime, save and state directories. */
export interface QmpBed {
  root: string;
  guestsDir: string;
  /** RC_LIBVIRT_RUN_DIR; the driver's runtime directory is its `qmp` folder. */
  runDir: string;
  qmpRunDir: string;
  saveDir: string;
  stateDir: string;
  consoleOf(name: string): string;
  bootId(name: string): string | undefined;
  /** A driver over the bed (own options for throttled saves). */
  driver(opts?: { saveBandwidth?: number }): DomainDriver;
  /** Start a guest through `d` and wait for its (new) ready line. */
  boot(d: DomainDriver, name: string): Promise<string>;
  /** The environment for `rc.libvirt` with DRIVER=qmp on this bed. */
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
  /** End every QEMU of the bed (by pidfile, checked) and remove the folder. */
  cleanup(): Promise<void>;
}

/** Write the definitions of `guests` into a new bed. */
export async function makeQmpBed(prefix: string, guests: QmpTestGuest[]): Promise<QmpBed> {
  const root = await makeTempDir(prefix);
  const guestsDir = join(root, 'guests');
  const runDir = join(root, 'run');
  const qmpRunDir = join(runDir, 'qmp');
  const saveDir = join(root, 'save');
  const stateDir = join(root, 'state');
  await mkdir(guestsDir);
  await mkdir(saveDir, { mode: 0o700 });
  const consoleOf = (name: string): string => join(root, `${name.replace(/[^A-Za-z0-9_-]/g, '_')}.console`);
  for (const g of guests) {
    // no_timer_check: on a loaded host a TCG guest's kernel can fail its boot-time
    // timer check and panic ("IO-APIC + timer doesn't work").
    const append = ['console=ttyS0', 'quiet', 'no_timer_check'];
    if (g.fill) append.push(`fill=${g.fill}`);
    if (g.stubborn) append.push('stubborn');
    const argv = [
      'qemu-system-x86_64', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', String(g.memMiB ?? 160),
      '-kernel', kernelPath, '-initrd', initrdPath, '-append', append.join(' '),
      '-chardev', `file,id=con0,path=${consoleOf(g.name).replaceAll(',', ',,')},append=on`, '-serial', 'chardev:con0',
      ...(g.extraArgv ?? []),
    ];
    await writeFile(join(guestsDir, `${g.name}.json`), JSON.stringify({ argv, autostart: g.autostart ?? false, policy: g.policy ?? {} }));
  }
  const drivers: DomainDriver[] = [];
  return {
    root, guestsDir, runDir, qmpRunDir, saveDir, stateDir, consoleOf,
    bootId: (name) => lastBootId(consoleOf(name)),
    driver(opts = {}) {
      const d = createQmpDriver({ guestsDir, runDir: qmpRunDir, saveDir, qemuTimeoutMs: 20_000, ...opts });
      drivers.push(d);
      return d;
    },
    async boot(d, name) {
      const from = consoleOffset(consoleOf(name));
      await d.start(name, { signal: AbortSignal.timeout(60_000) });
      return waitForGuestReady(consoleOf(name), { timeoutMs: 150_000, fromOffset: from });
    },
    env(extra = {}) {
      return {
        ...process.env,
        LC_ALL: 'C',
        RC_LIBVIRT_CONFIG: join(root, 'no-such-config'),
        DRIVER: 'qmp',
        QEMU_GUESTS_DIR: guestsDir,
        QEMU_SAVE_DIR: saveDir,
        RC_LIBVIRT_RUN_DIR: runDir,
        RC_LIBVIRT_STATE_DIR: stateDir,
        ...extra,
      };
    },
    async cleanup() {
      for (const d of drivers) await d.close().catch(() => undefined);
      for (const g of guests) {
        let pid: number | undefined;
        try {
          pid = Number(readFileSync(join(qmpRunDir, `${g.name}.pid`), 'utf8').trim());
        } catch {
          pid = undefined;
        }
        const id = pid ? identifyPid(pid) : undefined;
        let cmdline = '';
        try {
          cmdline = id ? readFileSync(`/proc/${id.pid}/cmdline`, 'utf8') : '';
        } catch {
          cmdline = '';
        }
        if (id && cmdline.includes(qmpRunDir)) await terminateProcess(id, 5_000);
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}
