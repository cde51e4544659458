// The benchmarks' libvirt test bed: the host-wide lock for the whole run,
// N test guests booted once and kept as reference images (`virsh save`), so
// every round starts from the same filled, ready guests in a second or two
// instead of a fresh TCG boot, and a cleanup that removes all of it by PID.
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { recordTestDaemons, startLibvirtDaemons, stopLibvirtDaemons, type DaemonName } from '../../test/helpers/daemons.js';
import { consoleOffset, readConsole, waitForGuestReady } from '../../test/helpers/console.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest } from '../../test/helpers/libvirt-guest.js';
import { findPidsByComm, identifyPid, isSameProcessAlive, makeTempDir, type ProcessIdentity } from '../../test/helpers/process.js';
import { requireTestbed } from '../../test/helpers/testbed.js';
import { domainState, runVirsh, virsh } from '../../test/helpers/virsh.js';

/** A bench guest and its reference image (a ready, filled guest saved once). */
export interface BenchGuest extends LibvirtGuest {
  imagePath: string;
}

/** A daemon of ours, by identity. */
export interface DaemonId {
  name: DaemonName;
  id: ProcessIdentity;
}

/** What openLibvirtBed sets up. */
export interface LibvirtBedOptions {
  count: number;
  memMiB: number;
  fill: number;
  log: (msg: string) => void;
}

/** The bed: guests, their images, our daemons. */
export interface LibvirtBed extends OwnDaemons {
  guests: BenchGuest[];
  dir: string;
  /** Makes exactly the first n guests run, restored from their reference images (the rest shut off, no managed save). libvirtd must run. */
  setRunning(n: number): Promise<void>;
  /** Removes the guests and images and stops our daemons; releases the lock. */
  close(): Promise<void>;
}

const DAEMON_NAMES: readonly DaemonName[] = ['virtlockd', 'virtlogd', 'libvirtd'];

// The daemons running now, by the pids in their pidfiles under /run/libvirt (checked against the process name).
function daemonsFromPidfiles(): DaemonId[] {
  const found: DaemonId[] = [];
  for (const name of DAEMON_NAMES) {
    let pid: number;
    try {
      pid = Number.parseInt(readFileSync(`/run/libvirt/${name}.pid`, 'utf8'), 10);
    } catch {
      continue;
    }
    const id = Number.isInteger(pid) && pid > 0 && findPidsByComm(name).includes(pid) ? identifyPid(pid) : undefined;
    if (id) found.push({ name, id });
  }
  return found;
}

// Guests booted at once; attempts per guest.
const BOOT_BATCH = 4;
const BOOT_ATTEMPTS = 3;
const PANIC = /Kernel panic/;

// Starts a defined guest and waits for its ready line; a boot whose kernel panics (or that is not ready in 4 min) is destroyed and tried again.
async function bootWithRetry(g: BenchGuest, log: (msg: string) => void): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const from = consoleOffset(g.consolePath);
    await virsh(['start', `--domain=${g.uuid}`]);
    try {
      await waitForGuestReady(g.consolePath, {
        timeoutMs: 240_000,
        fromOffset: from,
        failIf: () => (PANIC.test(readConsole(g.consolePath).slice(from)) ? 'the guest kernel panicked' : undefined),
      });
      return;
    } catch (err) {
      if (attempt >= BOOT_ATTEMPTS) throw err;
      log(`${g.name}: boot ${attempt} failed (${(err as Error).message.split('\n')[0]}); trying again`);
      await virsh(['destroy', `--domain=${g.uuid}`]).catch(() => undefined);
    }
  }
}

// UUIDs of the active guests on qemu:///system.
export async function activeGuestUuids(): Promise<string[]> {
  return (await virsh(['list', '--uuid'])).split('\n').map((l) => l.trim()).filter(Boolean);
}

/** The daemons of a bench that holds the host-wide lock. */
export interface OwnDaemons {
  /** Records the daemons now running as ours (after `rc.libvirt start` or the floor's start) and returns them. */
  adoptDaemons(): DaemonId[];
  /** Our daemons that still run. */
  daemons(): DaemonId[];
  /** True when none of the three daemons runs. */
  daemonsDown(): boolean;
}

// Waits for the host-wide lock and starts the daemons; throws (lock released) when daemons or guests run that are not ours.
export async function takeLibvirtd(log: (msg: string) => void): Promise<OwnDaemons> {
  log('waiting for the host-wide libvirtd lock and starting the daemons');
  const started = await startLibvirtDaemons({ lockTimeoutMs: 30 * 60_000 });
  let ours: DaemonId[] = [];
  const own: OwnDaemons = {
    adoptDaemons() {
      // We hold the lock and no daemon ran when we took it: whatever runs now was started by us or by our program.
      ours = daemonsFromPidfiles();
      recordTestDaemons(ours);
      return ours;
    },
    daemons: () => ours.filter((d) => isSameProcessAlive(d.id)),
    daemonsDown: () => DAEMON_NAMES.every((n) => findPidsByComm(n).length === 0),
  };
  try {
    if (started.reused.length > 0) {
      throw new Error(`libvirt daemons run outside the test lock (${started.reused.map((d) => `${d.name} ${d.pid}`).join(', ')}); not benchmarking against someone else's daemons`);
    }
    own.adoptDaemons();
    const active = await activeGuestUuids();
    if (active.length > 0) throw new Error(`guests run on qemu:///system that are not ours (${active.join(', ')}); the benchmarks need it to themselves`);
  } catch (err) {
    await stopLibvirtDaemons().catch((e: Error) => log(`cleanup after a failed setup: ${e.message}`));
    throw err;
  }
  return own;
}

// Takes the lock, starts the daemons, boots the guests (all at once) and saves each to its reference image.
export async function openLibvirtBed(opts: LibvirtBedOptions): Promise<LibvirtBed> {
  requireTestbed();
  const own = await takeLibvirtd(opts.log);
  const guests: BenchGuest[] = [];
  const dir = await makeTempDir('rcl-bench-');
  const bed: LibvirtBed = {
    guests,
    dir,
    ...own,
    async setRunning(n) {
      const wanted = guests.slice(0, n);
      const others = guests.slice(n);
      await Promise.all(others.map(async (g) => {
        const st = await domainState(g.uuid);
        if (st !== undefined && st !== 'shut off') await virsh(['destroy', `--domain=${g.uuid}`]);
        await runVirsh(['managedsave-remove', `--domain=${g.uuid}`]);
      }));
      await Promise.all(wanted.map(async (g) => {
        const st = await domainState(g.uuid);
        if (st === 'running') return;
        if (st !== 'shut off') await virsh(['destroy', `--domain=${g.uuid}`]);
        await runVirsh(['managedsave-remove', `--domain=${g.uuid}`]);
        await virsh(['restore', `--file=${g.imagePath}`], { timeoutMs: 300_000 });
      }));
    },
    async close() {
      const problems: string[] = [];
      try {
        // Guests are removed through libvirtd: start it again if a round left it down.
        if (bed.daemonsDown()) await startLibvirtDaemons();
        await removeLibvirtGuests();
      } catch (err) {
        problems.push((err as Error).message);
      }
      await stopLibvirtDaemons().catch((err: Error) => problems.push(err.message));
      await rm(dir, { recursive: true, force: true });
      if (problems.length > 0) throw new Error(`bench cleanup: ${problems.join('; ')}`);
    },
  };
  try {
    opts.log(`booting ${opts.count} test guests (${opts.memMiB} MiB, fill=${opts.fill}) under TCG`);
    const defined = await Promise.all(Array.from({ length: opts.count }, (_, i) =>
      defineLibvirtGuest({ name: `rcl-bench-${i + 1}`, memMiB: opts.memMiB, fill: opts.fill, start: false })));
    for (const g of defined) guests.push({ ...g, imagePath: join(dir, `${g.name}.img`) });
    // A few at a time: on a starved host a TCG guest's kernel can panic at boot ("IO-APIC + timer doesn't work").
    for (let i = 0; i < guests.length; i += BOOT_BATCH) {
      await Promise.all(guests.slice(i, i + BOOT_BATCH).map((g) => bootWithRetry(g, opts.log)));
    }
    opts.log('saving reference images');
    await Promise.all(guests.map((g) => virsh(['save', `--domain=${g.uuid}`, `--file=${g.imagePath}`], { timeoutMs: 300_000 })));
  } catch (err) {
    await bed.close().catch((e: Error) => opts.log(`cleanup after a failed setup: ${e.message}`));
    throw err;
  }
  return bed;
}
