// The test guest as a libvirt domain (TCG, direct kernel boot, serial console
// to a file, no disks, network or graphics), and a registry so one
// removeLibvirtGuests() destroys and undefines every domain these helpers defined.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { consoleOffset, lastBootId, waitForGuestReady } from './console.js';
import { identifyPid, makeTempDir, terminateProcess } from './process.js';
import { initrdPath, kernelPath } from './testbed.js';
import { domainState, runVirsh, virsh } from './virsh.js';

/** How to define (and start) a test guest in libvirt. */
export interface LibvirtGuestOptions {
  // Any legal libvirt name, spaces and leading dashes included.
  name: string;
  memMiB?: number;
  // MiB of random data the guest writes to a tmpfs before it is ready.
  fill?: number;
  // The guest ignores its power button.
  stubborn?: boolean;
  // Start it and wait for its ready line; default true.
  start?: boolean;
  // Deadline for the ready line; default 120 s.
  readyTimeoutMs?: number;
}

/** A domain defined by defineLibvirtGuest. */
export interface LibvirtGuest {
  name: string;
  uuid: string;
  dir: string;
  xmlPath: string;
  // The serial console log (appended to across restarts and restores).
  consolePath: string;
  // The boot id of the last console line that carries one (same after a restore, new after a reboot).
  bootId(): string | undefined;
}

// Marks our domains, so a later run can tell a leftover test guest from a real one.
const MARKER = 'rc-libvirt integration test guest';

// Every domain defined here and not yet removed, by UUID.
const registry = new Map<string, LibvirtGuest>();

// Escapes text for XML content and attribute values.
function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

// Builds the domain XML of a test guest.
export function libvirtGuestXml(opts: LibvirtGuestOptions & { uuid: string; consolePath: string }): string {
  // no_timer_check: on a loaded host a TCG guest's kernel can fail its boot-time
  // timer check and panic ("IO-APIC + timer doesn't work").
  const cmdline = ['console=ttyS0', 'quiet', 'no_timer_check'];
  if (opts.fill) cmdline.push(`fill=${opts.fill}`);
  if (opts.stubborn) cmdline.push('stubborn');
  return `<domain type='qemu'>
  <name>${xmlEscape(opts.name)}</name>
  <uuid>${opts.uuid}</uuid>
  <description>${MARKER}</description>
  <memory unit='MiB'>${opts.memMiB ?? 256}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(kernelPath)}</kernel>
    <initrd>${xmlEscape(initrdPath)}</initrd>
    <cmdline>${cmdline.join(' ')}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='${xmlEscape(opts.consolePath)}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

// Starts a defined test guest and waits for its (new) ready line; returns the boot id.
export async function startLibvirtGuest(guest: LibvirtGuest, opts: { readyTimeoutMs?: number } = {}): Promise<string> {
  const from = consoleOffset(guest.consolePath);
  await virsh(['start', `--domain=${guest.uuid}`]);
  return waitForGuestReady(guest.consolePath, {
    timeoutMs: opts.readyTimeoutMs ?? 120_000,
    fromOffset: from,
  });
}

// Defines a test guest with `virsh define` (and by default starts it and waits for its ready line); removeLibvirtGuests() undoes it.
export async function defineLibvirtGuest(opts: LibvirtGuestOptions): Promise<LibvirtGuest> {
  await removeLeftoverGuest(opts.name);
  const uuid = randomUUID();
  const dir = await makeTempDir('rcl-libvirt-');
  const consolePath = join(dir, 'console.log');
  const xmlPath = join(dir, 'domain.xml');
  await writeFile(xmlPath, libvirtGuestXml({ ...opts, uuid, consolePath }));
  const guest: LibvirtGuest = {
    name: opts.name,
    uuid,
    dir,
    xmlPath,
    consolePath,
    bootId: () => lastBootId(consolePath),
  };
  registry.set(uuid, guest);
  await virsh(['define', `--file=${xmlPath}`]);
  if (opts.start ?? true) await startLibvirtGuest(guest, opts);
  return guest;
}

// The PID of a running domain's QEMU from libvirt's status XML, or undefined.
export function libvirtGuestPid(guest: { name: string; uuid: string }): number | undefined {
  try {
    const status = readFileSync(`/run/libvirt/qemu/${guest.name}.xml`, 'utf8');
    const m = /<domstatus\b[^>]*\bpid='(\d+)'/.exec(status);
    if (!m || !status.includes(`<uuid>${guest.uuid}</uuid>`)) return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}

// A process's command line (NUL-separated), or '' when it is gone.
function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return '';
  }
}

// Destroys and undefines one domain by UUID (ending its QEMU by PID if libvirt could not), removes its temp folder; returns a problem or undefined.
async function removeGuest(guest: { name: string; uuid: string; dir?: string }): Promise<string | undefined> {
  const pid = libvirtGuestPid(guest);
  const domain = `--domain=${guest.uuid}`;
  const state = await domainState(guest.uuid);
  let problem: string | undefined;
  if (state !== undefined && state !== 'shut off') {
    await runVirsh(['destroy', domain], { timeoutMs: 60_000 });
  }
  if (state !== undefined) {
    let r = await runVirsh(['undefine', domain, '--managed-save', '--snapshots-metadata', '--nvram']);
    if (r.code !== 0 && (await domainState(guest.uuid)) !== undefined) {
      r = await runVirsh(['undefine', domain, '--managed-save']);
      if (r.code !== 0) problem = `${guest.name}: ${r.stderr.trim()}`;
    }
  }
  // libvirtd unreachable or destroy failed: end its QEMU by PID.
  const id = pid === undefined ? undefined : identifyPid(pid);
  if (id && readCmdline(id.pid).includes(guest.uuid)) await terminateProcess(id, 10_000);
  if (guest.dir) await rm(guest.dir, { recursive: true, force: true });
  return problem;
}

// Removes a test guest of this name that a crashed run left defined (we hold the test lock, so no live run owns it); refuses to touch a domain that is not a test guest.
async function removeLeftoverGuest(name: string): Promise<void> {
  let xml: string;
  try {
    xml = readFileSync(`/etc/libvirt/qemu/${name}.xml`, 'utf8');
  } catch {
    return;
  }
  const uuid = /<uuid>([0-9a-f-]{36})<\/uuid>/.exec(xml)?.[1];
  if (!uuid || !xml.includes(`<description>${MARKER}</description>`)) {
    throw new Error(`a domain named ${JSON.stringify(name)} exists and is not a test guest; not touching it`);
  }
  const consoleDir = /<source path='([^']*\/rcl-libvirt-[^/']+)\/console\.log'/.exec(xml)?.[1];
  console.warn(`removing test guest ${JSON.stringify(name)} (${uuid}), left defined by an earlier run`);
  const problem = await removeGuest({ name, uuid, ...(consoleDir ? { dir: consoleDir } : {}) });
  if (problem) throw new Error(`cannot remove the leftover test guest ${problem}`);
}

// Destroys and undefines (with managed save and NVRAM) every domain defined by these helpers, by UUID, ignoring ones already gone; removes their temp folders.
export async function removeLibvirtGuests(): Promise<void> {
  const guests = [...registry.values()];
  registry.clear();
  const problems: string[] = [];
  for (const guest of guests) {
    const problem = await removeGuest(guest);
    if (problem) problems.push(problem);
  }
  if (problems.length > 0) throw new Error(`could not undefine: ${problems.join('; ')}`);
}
