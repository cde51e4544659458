// Small libvirt guests for the scale part: 32 MiB, TCG, no disk, kernel or
// network. SeaBIOS finds nothing to boot and, with rebootTimeout -1, waits
// there for good, so a guest takes little CPU and its save is small: what is
// measured is the listing and the per-guest calls, not the guests' work.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { identifyPid, isSameProcessAlive, terminateProcess } from '../../test/helpers/process.js';
import { libvirtGuestPid } from '../../test/helpers/libvirt-guest.js';
import { domainState, runVirsh, virsh } from '../../test/helpers/virsh.js';

/** A defined firmware guest. */
export interface FirmwareGuest {
  name: string;
  uuid: string;
}

// Marks the domains defined here, so a later run can tell a leftover from someone's guest.
const MARKER = 'rc-libvirt bench firmware guest';
// Guests defined, started or removed at once.
const BATCH = 16;

// The domain XML of a firmware guest.
export function firmwareGuestXml(name: string, uuid: string, memMiB: number): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <description>${MARKER}</description>
  <memory unit='MiB'>${memMiB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <bios rebootTimeout='-1'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** The firmware guests of a run. */
export interface FirmwareGuests {
  /** Every guest defined so far, in order. */
  readonly guests: FirmwareGuest[];
  /** Defines and starts guests (a batch at a time) until the first n are defined and running. libvirtd must run. */
  grow(n: number): Promise<void>;
  /** Starts every defined guest that does not run (restoring its managed save, if any). libvirtd must run. */
  ensureRunning(): Promise<void>;
  /** Destroys and undefines (with managed save) every guest defined here, ending its QEMU by PID when libvirt cannot. libvirtd must run. */
  removeAll(): Promise<void>;
}

// Runs fn on the items, `BATCH` at a time.
async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += BATCH) await Promise.all(items.slice(i, i + BATCH).map(fn));
}

// Destroys and undefines one guest; returns a problem or undefined.
async function removeOne(g: FirmwareGuest): Promise<string | undefined> {
  const pid = libvirtGuestPid(g);
  const id = pid === undefined ? undefined : identifyPid(pid);
  await runVirsh(['destroy', `--domain=${g.uuid}`], { timeoutMs: 60_000 });
  const r = await runVirsh(['undefine', `--domain=${g.uuid}`, '--managed-save', '--nvram']);
  if (id && isSameProcessAlive(id)) await terminateProcess(id, 10_000);
  if (r.code !== 0 && !/failed to get domain|Domain not found/i.test(r.stderr)) return `${g.name}: ${r.stderr.trim()}`;
  return undefined;
}

// Removes a guest of this name left by a run that died; refuses to touch one that is not ours.
async function removeLeftover(name: string): Promise<void> {
  const r = await runVirsh(['dumpxml', `--domain=${name}`]);
  if (r.code !== 0) return;
  const uuid = /<uuid>([0-9a-f-]{36})<\/uuid>/.exec(r.stdout)?.[1];
  if (!uuid || !r.stdout.includes(`<description>${MARKER}</description>`)) {
    throw new Error(`a domain named ${name} exists and is not a bench guest; not touching it`);
  }
  const problem = await removeOne({ name, uuid });
  if (problem) throw new Error(`cannot remove the leftover bench guest ${problem}`);
}

// Firmware guests named `${prefix}N` whose XML files go to `dir`.
export function firmwareGuests(opts: { prefix: string; memMiB: number; dir: string }): FirmwareGuests {
  const guests: FirmwareGuest[] = [];
  return {
    guests,
    async grow(n) {
      const added: FirmwareGuest[] = [];
      for (let i = guests.length + 1; i <= n; i++) added.push({ name: `${opts.prefix}${i}`, uuid: randomUUID() });
      await inBatches(added, async (g) => {
        await removeLeftover(g.name);
        const xml = join(opts.dir, `${g.name}.xml`);
        await writeFile(xml, firmwareGuestXml(g.name, g.uuid, opts.memMiB));
        guests.push(g);
        await virsh(['define', `--file=${xml}`]);
        await virsh(['start', `--domain=${g.uuid}`]);
      });
      // Keep the order of the names (the batches finish in any order).
      guests.sort((a, b) => Number(a.name.slice(opts.prefix.length)) - Number(b.name.slice(opts.prefix.length)));
    },
    async ensureRunning() {
      await inBatches([...guests], async (g) => {
        const st = await domainState(g.uuid);
        if (st === 'running') return;
        if (st !== undefined && st !== 'shut off') await runVirsh(['destroy', `--domain=${g.uuid}`], { timeoutMs: 60_000 });
        await virsh(['start', `--domain=${g.uuid}`], { timeoutMs: 120_000 });
      });
    },
    async removeAll() {
      const problems: string[] = [];
      await inBatches([...guests], async (g) => {
        const p = await removeOne(g);
        if (p) problems.push(p);
      });
      guests.length = 0;
      if (problems.length > 0) throw new Error(`could not undefine: ${problems.join('; ')}`);
    },
  };
}
