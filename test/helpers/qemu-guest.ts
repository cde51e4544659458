// The test guest under plain QEMU (TCG), spawned as our own child with a QMP
// unix socket and a serial console file, plus a registry so one cleanupAll()
// ends every QEMU and removes every temp folder these helpers made.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { consoleTail, waitForGuestReady } from './console.js';
import { findProgram, makeTempDir, waitFor } from './process.js';
import { initrdPath, kernelPath } from './testbed.js';

/** How to boot a test guest under plain QEMU. */
export interface QemuGuestOptions {
  name: string;
  memMiB?: number;
  // MiB of random data the guest writes to a tmpfs before it is ready.
  fill?: number;
  // The guest ignores its power button.
  stubborn?: boolean;
  // `-machine none`: no guest at all, only QMP (starts in ~30 ms, no ready line, no ACPI).
  machineNone?: boolean;
  // Appended to QEMU's command line (e.g. ['-incoming', 'defer']).
  extraArgs?: readonly string[];
  // Folder for the QMP socket and the console log; default a temp folder that cleanupAll() removes.
  dir?: string;
  // Deadline for the ready line (or the socket); default 120 s.
  readyTimeoutMs?: number;
  // Do not wait for the ready line (e.g. with -incoming, where the guest comes up paused).
  noWait?: boolean;
}

/** How a QEMU process ended. */
export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running QEMU started by bootQemuGuest. */
export interface QemuGuest {
  name: string;
  pid: number;
  qmpSocket: string;
  consolePath: string;
  // The boot id from the ready line; undefined for machineNone or noWait.
  bootId: string | undefined;
  // QEMU's program and arguments, e.g. to start the same guest again with -incoming.
  command: readonly string[];
  dir: string;
  // Resolves when QEMU exits.
  exited: Promise<QemuExit>;
  // QEMU's stderr so far (the last 8 KiB).
  stderr(): string;
  isRunning(): boolean;
  // SIGTERM, wait, SIGKILL; resolves once QEMU has exited.
  kill(): Promise<QemuExit>;
}

interface Entry {
  child: ChildProcess;
  exited: Promise<QemuExit>;
  dir: string;
  ownsDir: boolean;
}

const registry = new Set<Entry>();
const ownedDirs = new Set<string>();
let started = 0;

// Last resort if the worker exits without cleanupAll(): SIGKILL what is left.
process.once('exit', () => {
  for (const e of registry) {
    if (e.child.exitCode === null && e.child.signalCode === null) e.child.kill('SIGKILL');
  }
});

// Escapes a value for QEMU's option syntax (a comma is written twice).
function qemuOpt(value: string): string {
  return value.replaceAll(',', ',,');
}

// Builds QEMU's arguments for the test guest (without the program name).
export function qemuGuestArgs(opts: QemuGuestOptions & { qmpSocket: string; consolePath: string }): string[] {
  const args = ['-name', `guest=${qemuOpt(opts.name)}`, '-nodefaults', '-display', 'none'];
  args.push('-qmp', `unix:${qemuOpt(opts.qmpSocket)},server=on,wait=off`);
  if (opts.machineNone) {
    args.push('-machine', 'none');
  } else {
    // no_timer_check: on a loaded host a TCG guest's kernel can fail its boot-time
    // timer check and panic ("IO-APIC + timer doesn't work").
    const cmdline = ['console=ttyS0', 'quiet', 'no_timer_check'];
    if (opts.fill) cmdline.push(`fill=${opts.fill}`);
    if (opts.stubborn) cmdline.push('stubborn');
    args.push('-accel', 'tcg', '-m', String(opts.memMiB ?? 256));
    args.push('-kernel', kernelPath, '-initrd', initrdPath, '-append', cmdline.join(' '));
    args.push('-serial', `file:${opts.consolePath}`);
  }
  args.push(...(opts.extraArgs ?? []));
  return args;
}

// Ends one QEMU child: SIGTERM, up to 5 s, then SIGKILL.
async function stopChild(e: Entry): Promise<QemuExit> {
  if (e.child.exitCode === null && e.child.signalCode === null) {
    e.child.kill('SIGTERM');
    const timer = setTimeout(() => e.child.kill('SIGKILL'), 5_000);
    try {
      return await e.exited;
    } finally {
      clearTimeout(timer);
    }
  }
  return e.exited;
}

// Boots the test guest under plain QEMU as our child and waits for its ready line (machineNone: for its QMP socket).
export async function bootQemuGuest(opts: QemuGuestOptions): Promise<QemuGuest> {
  const qemu = findProgram('qemu-system-x86_64') ?? 'qemu-system-x86_64';
  const ownsDir = opts.dir === undefined;
  const dir = opts.dir ?? (await makeTempDir('rcl-qemu-'));
  if (ownsDir) ownedDirs.add(dir);
  const n = ++started;
  const qmpSocket = join(dir, `qmp-${n}.sock`);
  const consolePath = join(dir, `console-${n}.log`);
  await rm(qmpSocket, { force: true });
  const args = qemuGuestArgs({ ...opts, qmpSocket, consolePath });
  // setpriv --pdeathsig: QEMU dies with the test worker even if no hook runs.
  const setpriv = findProgram('setpriv');
  const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', qemu, ...args]] : [qemu, args];
  const child = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-8192);
  });
  const exited = new Promise<QemuExit>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => {
      stderr += `\nspawn failed: ${err.message}`;
      resolve({ code: null, signal: null });
    });
  });
  const entry: Entry = { child, exited, dir, ownsDir };
  registry.add(entry);
  const isRunning = (): boolean => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
  const describeExit = (): string | undefined =>
    isRunning() ? undefined : `QEMU ${opts.name} exited (${child.exitCode ?? child.signalCode ?? 'spawn failed'}; stderr: ${stderr.trim() || 'none'})`;
  const timeoutMs = opts.readyTimeoutMs ?? 120_000;

  let bootId: string | undefined;
  try {
    if (opts.machineNone || opts.noWait) {
      await waitFor(`QMP socket ${qmpSocket}`, () => {
        const failure = describeExit();
        if (failure) throw new Error(failure);
        return existsSync(qmpSocket);
      }, { timeoutMs, intervalMs: 10 });
    } else {
      bootId = await waitForGuestReady(consolePath, { timeoutMs, failIf: describeExit });
    }
  } catch (err) {
    await stopChild(entry);
    const tail = opts.machineNone ? '' : `\nconsole tail:\n${consoleTail(consolePath)}`;
    throw new Error(`test guest ${opts.name} did not come up: ${(err as Error).message}${tail}`, { cause: err });
  }

  return {
    name: opts.name,
    pid: child.pid ?? -1,
    qmpSocket,
    consolePath,
    bootId,
    command: [qemu, ...args],
    dir,
    exited,
    stderr: () => stderr,
    isRunning,
    kill: () => stopChild(entry),
  };
}

// Ends every QEMU the helpers started (by PID: SIGTERM, wait, SIGKILL) and removes their temp folders; safe in afterAll after a failure.
export async function cleanupAll(): Promise<void> {
  const entries = [...registry];
  registry.clear();
  await Promise.all(entries.map((e) => stopChild(e)));
  const dirs = [...ownedDirs];
  ownedDirs.clear();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}
