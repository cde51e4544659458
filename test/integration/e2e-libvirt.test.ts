// End to end on libvirt: rc/rc.libvirt (the installed shell script, run
// through test/helpers/rc-libvirt-harness.ts) starts and stops virtlockd,
// virtlogd and libvirtd itself, across simulated reboots (the daemons gone,
// their pidfiles and sockets, rc-libvirt's run directory and libvirt's
// autostart markers removed), with four small test guests booted once:
//   A  runs; policy order 2
//   P  paused before the first stop; policy order 1, on_shutdown=managedsave
//   D  runs; policy order 1, on_shutdown=destroy
//   S  autostart, shut off until libvirtd autostarts it after the reboot
// Each test builds on the state the one before left, in this order:
// dry runs and plan change nothing; stop (PARALLEL=1) saves A and P one at a
// time and destroys D; reboot; start restores A and P in the same boot (P
// paused), starts D afresh, libvirtd autostarts S; soft_restart; guests_reboot;
// restart (ON_SHUTDOWN=shutdown); guests_shutdown then shutdown; reboot; start
// with ON_BOOT=ignore; start with ON_BOOT=restore and START_DELAY (order from
// lifecycle events); guests_reboot over two URIs to the same daemon; -q/-v.
// `status` and `status --json` are checked after every step with their exit code.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Status } from '../../src/rc/status.js';
import { consoleOffset, readConsole, waitForConsoleLine, waitForGuestReady } from '../helpers/console.js';
import { defineLibvirtGuest, libvirtGuestPid, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { isPidAlive, waitFor } from '../helpers/process.js';
import { openRcDaemonsBed, type RcDaemonsBed } from '../helpers/rc-libvirt-harness.js';
import type { CliRun } from '../helpers/rc-cli.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';

const SAVE_DIR = '/var/lib/libvirt/qemu/save';
const POLICY_NS = 'urn:rc-libvirt:policy:1';
const SECOND_URI = 'qemu+unix:///system?socket=/run/libvirt/libvirt-sock';

let bed: RcDaemonsBed;
let A: LibvirtGuest;
let P: LibvirtGuest;
let D: LibvirtGuest;
let S: LibvirtGuest;
const all = (): LibvirtGuest[] => [A, P, D, S];
// Boot ids as the consoles last showed them.
const boots = new Map<LibvirtGuest, string>();
// Console offsets taken before a step.
let marks = new Map<LibvirtGuest, number>();
const events: ChildProcess[] = [];

// A modprobe first on PATH that records its arguments (one line per call) and exits `code`.
function recordingModprobe(code: number): { settings: Record<string, string>; calls: () => string[] } {
  const dir = join(bed.dir, `modprobe-${code}`);
  const log = join(dir, 'calls');
  mkdirSync(dir, { recursive: true });
  writeFileSync(log, '');
  writeFileSync(join(dir, 'modprobe'), `#!/bin/sh\necho "$*" >> '${log}'\nexit ${code}\n`);
  chmodSync(join(dir, 'modprobe'), 0o755);
  return {
    settings: { PATH: `${dir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`, MODULES: 'tun vhost_net' },
    calls: () => readFileSync(log, 'utf8').split('\n').filter(Boolean),
  };
}

function out(r: CliRun): string {
  return `exit ${r.code}\n${r.stdout}${r.stderr}`;
}

function mark(): void {
  marks = new Map(all().map((g) => [g, consoleOffset(g.consolePath)]));
}

// The boot ids of the ready lines a guest printed since the last mark().
function readySince(g: LibvirtGuest): string[] {
  return [...readConsole(g.consolePath).slice(marks.get(g) ?? 0).matchAll(/^RCL-READY boot=(\S+)/gm)].map((m) => m[1] as string);
}

function sinceMark(g: LibvirtGuest): string {
  return readConsole(g.consolePath).slice(marks.get(g) ?? 0);
}

// A fresh boot since the last mark: exactly one new ready line, with a new boot id.
async function expectFreshBoot(g: LibvirtGuest): Promise<void> {
  await waitForGuestReady(g.consolePath, { timeoutMs: 150_000, fromOffset: marks.get(g) ?? 0 });
  const ids = readySince(g);
  expect(ids, g.name).toHaveLength(1);
  expect(ids[0]).not.toBe(boots.get(g));
  boots.set(g, ids[0] as string);
}

// Restored from its saved image: QEMU was started with -incoming, and the console shows no boot since the mark.
function expectRestored(g: LibvirtGuest): void {
  const pid = libvirtGuestPid(g);
  expect(pid, g.name).toBeGreaterThan(0);
  expect(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0'), g.name).toContain('-incoming');
  expect(readySince(g), g.name).toEqual([]);
}

async function states(): Promise<Record<string, string | undefined>> {
  const o: Record<string, string | undefined> = {};
  for (const g of all()) o[g.name] = await domainState(g.uuid);
  return o;
}

// Runs `status` and `status --json`, expects `code` from both; returns the JSON.
async function status(code: number): Promise<Status> {
  const text = await bed.run(['status']);
  expect(text.code, out(text)).toBe(code);
  const json = await bed.run(['status', '--json']);
  expect(json.code, out(json)).toBe(code);
  const s = JSON.parse(json.stdout) as Status;
  const pids = bed.daemonPids();
  expect(s.daemons.map((d) => [d.name, d.pid])).toEqual(['virtlockd', 'virtlogd', 'libvirtd'].map((n) => [n, pids[n as 'libvirtd'] ?? null]));
  if (code === 0) {
    // The guests as libvirt sees them.
    for (const g of all()) {
      const st = await domainState(g.uuid);
      const want = st === 'shut off' ? 'shutoff' : st;
      expect(s.guests.find((x) => x.id === g.uuid), g.name).toMatchObject({ name: g.name, state: want });
      expect(text.stdout).toContain(g.name);
    }
  }
  return s;
}

// Names, sizes and mtimes of every file under the folders (recursively); daemon pids; guest states, QEMU pids, console lengths.
async function snapshot(): Promise<unknown> {
  const files: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      const st = lstatSync(p);
      files.push(`${p} ${st.isDirectory() ? 'dir' : st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  for (const d of [join(bed.dir, 'run'), join(bed.dir, 'state'), join(bed.dir, 'pid'), SAVE_DIR]) walk(d);
  return {
    files,
    daemons: bed.daemonPids(),
    guests: await states(),
    qemu: all().map((g) => libvirtGuestPid(g) ?? null),
    consoles: all().map((g) => consoleOffset(g.consolePath)),
  };
}

function policy(g: LibvirtGuest, attrs: string, live: boolean): Promise<string> {
  return virsh(['metadata', `--domain=${g.uuid}`, `--uri=${POLICY_NS}`, '--key=rcl', '--config', ...(live ? ['--live'] : []), `--set=<policy ${attrs}/>`]);
}

// Does one virsh call log interval overlap another?
function overlapping(calls: { startedAt: number; endedAt: number | undefined }[]): boolean {
  const s = [...calls].sort((a, b) => a.startedAt - b.startedAt);
  return s.some((c, i) => i > 0 && c.startedAt < (s[i - 1]!.endedAt ?? Infinity));
}

describe('rc/rc.libvirt end to end on libvirt, across simulated reboots', () => {
  beforeAll(async () => {
    bed = await openRcDaemonsBed('rcl-e2e-lv-', { settings: { TIMEOUT: '120' } });
  }, 10 * 60_000);

  afterAll(async () => {
    for (const c of events) if (c.exitCode === null) c.kill('SIGTERM');
    await bed?.close();
  }, 5 * 60_000);

  it('start from nothing: status 3, start --dry-run starts nothing, start brings up the three daemons (pidfiles in the test\'s directory); then the guests boot', async () => {
    expect(bed.daemonPids()).toEqual({ virtlockd: undefined, virtlogd: undefined, libvirtd: undefined });
    const down = await bed.run(['status', '--json']);
    expect(down.code, out(down)).toBe(3);
    expect((JSON.parse(down.stdout) as Status).libvirtd?.running).toBe(false);
    const dry = await bed.run(['start', '--dry-run']);
    expect(dry.code, out(dry)).toBe(0);
    expect(dry.stdout).toContain(`libvirtd would be started: /usr/sbin/libvirtd -d -l -f /etc/libvirt/libvirtd.conf -p ${bed.pidfile('libvirtd')}`);
    expect(bed.daemonPids()).toEqual({ virtlockd: undefined, virtlogd: undefined, libvirtd: undefined });
    expect(existsSync(join(bed.dir, 'run'))).toBe(false);

    const modprobe = recordingModprobe(0);
    const start = await bed.run(['start'], modprobe.settings);
    expect(start.code, out(start)).toBe(0);
    expect(start.stdout).toContain('libvirtd answers');
    // MODULES loaded with one `modprobe -a` before libvirtd (no KVM on this CPU: no kvm modules).
    expect(modprobe.calls()).toEqual(['-a tun vhost_net']);
    expect(start.stdout).toContain('modules loaded: tun vhost_net');
    const pids = bed.daemonPids();
    for (const n of ['virtlockd', 'virtlogd', 'libvirtd'] as const) expect(pids[n], n).toBeGreaterThan(0);
    expect(existsSync(join(bed.dir, 'run'))).toBe(true);

    [A, P, D, S] = await Promise.all([
      defineLibvirtGuest({ name: 'rcl e2e A', memMiB: 96 }),
      defineLibvirtGuest({ name: 'rcl e2e P', memMiB: 96 }),
      defineLibvirtGuest({ name: 'rcl e2e D', memMiB: 96 }),
      defineLibvirtGuest({ name: 'rcl e2e S', memMiB: 96, start: false }),
    ]);
    await policy(A, 'order="2"', true);
    await policy(P, 'order="1" on_shutdown="managedsave"', true);
    await policy(D, 'order="1" on_shutdown="destroy"', true);
    await virsh(['autostart', `--domain=${S.uuid}`]);
    await virsh(['suspend', `--domain=${P.uuid}`]);
    for (const g of [A, P, D]) boots.set(g, g.bootId() as string);
    expect(await states()).toEqual({ [A.name]: 'running', [P.name]: 'paused', [D.name]: 'running', [S.name]: 'shut off' });
    const s = await status(0);
    expect(s.pending).toEqual([]);
  }, 300_000);

  it('every --dry-run and plan change nothing: guests, files of the run, state and save directories, daemon pids', async () => {
    const before = await snapshot();
    const cmds = [
      ['start', '--dry-run'], ['stop', '--dry-run'], ['shutdown', '--dry-run'], ['restart', '--dry-run'], ['soft_restart', '--dry-run'],
      ['guests_shutdown', '--dry-run'], ['guests_reboot', '--dry-run'], ['plan'], ['plan', '--json'],
    ];
    const runs = new Map<string, CliRun>();
    for (const c of cmds) {
      const r = await bed.run(c);
      expect(r.code, `${c.join(' ')}: ${out(r)}`).toBe(0);
      runs.set(c.join(' '), r);
    }
    expect(await snapshot()).toEqual(before);
    for (const c of cmds.filter((c) => c[1] === '--dry-run')) expect(runs.get(c.join(' '))!.stdout, c.join(' ')).toContain('dry run');
    expect(runs.get('stop --dry-run')!.stdout).toMatch(/libvirtd \(pid \d+\) would be stopped/);
    expect(runs.get('guests_reboot --dry-run')!.stdout).toContain(`'${A.name}': reboot`);
    const plan = JSON.parse(runs.get('plan --json')!.stdout) as { guests: { name: string; requested: string; action: string; order: number }[] };
    const byName = (n: string) => plan.guests.find((g) => g.name === n);
    expect(byName(A.name)).toMatchObject({ requested: 'managedsave', action: 'save', order: 2 });
    expect(byName(P.name)).toMatchObject({ requested: 'managedsave', action: 'save', order: 1, state: 'paused' });
    expect(byName(D.name)).toMatchObject({ requested: 'destroy', action: 'destroy', order: 1 });
    expect(byName(S.name)).toBeUndefined();
  }, 180_000);

  it('stop with PARALLEL=1: A and P saved one at a time, D destroyed by its policy, the daemons stopped; the journal names the three', async () => {
    const qemu = [A, P, D].map((g) => libvirtGuestPid(g) as number);
    const daemons = Object.values(bed.daemonPids()) as number[];
    const from = bed.virsh.calls().length;
    const modprobe = recordingModprobe(0);
    const stop = await bed.run(['stop'], { PARALLEL: '1', ...modprobe.settings });
    expect(stop.code, out(stop)).toBe(0);
    // Without /proc/modules nothing tells which modules are unused: none is unloaded.
    expect(modprobe.calls()).toEqual([]);
    expect(stop.stdout).toContain('no /proc/modules: cannot tell which modules are in use, none unloaded');
    const saves = bed.virsh.calls().slice(from).filter((c) => c.sub === 'managedsave');
    expect(saves.map((c) => c.guest).sort(), out(stop)).toEqual([A.uuid, P.uuid].sort());
    expect(saves.every((c) => c.exitCode === 0)).toBe(true);
    expect(overlapping(saves)).toBe(false);
    for (const pid of [...qemu, ...daemons]) expect(isPidAlive(pid), String(pid)).toBe(false);
    expect(bed.daemonPids()).toEqual({ virtlockd: undefined, virtlogd: undefined, libvirtd: undefined });
    for (const n of ['virtlockd', 'virtlogd', 'libvirtd'] as const) expect(existsSync(bed.pidfile(n)), n).toBe(false);
    expect(existsSync(join(SAVE_DIR, `${A.name}.save`))).toBe(true);
    expect(existsSync(join(SAVE_DIR, `${P.name}.save`))).toBe(true);
    expect(existsSync(join(SAVE_DIR, `${D.name}.save`))).toBe(false);
    const s = await status(3);
    expect(s.pending.map((p) => [p.name, p.action, p.stateBefore]).sort()).toEqual([
      [A.name, 'saved', 'running'], [D.name, 'destroyed', 'running'], [P.name, 'saved', 'paused'],
    ].sort());
    const removed = bed.simulateReboot();
    expect(removed).toContain(join(bed.dir, 'run'));
    expect(existsSync(join(bed.dir, 'run'))).toBe(false);
  }, 180_000);

  it('start after the reboot: A restored and P restored paused (same boots), D started afresh, S autostarted by libvirtd; ascending order groups', async () => {
    mark();
    const from = bed.virsh.calls().length;
    const start = await bed.run(['start']);
    expect(start.code, out(start)).toBe(0);
    expect(await domainState(A.uuid)).toBe('running');
    expect(await domainState(P.uuid)).toBe('paused');
    await expectFreshBoot(D);
    await expectFreshBoot(S);
    expectRestored(A);
    expectRestored(P);
    expect(existsSync(join(SAVE_DIR, `${A.name}.save`))).toBe(false);
    // Order 1 (P, D) before order 2 (A); S was not rc.libvirt's to start.
    const starts = bed.virsh.calls().slice(from).filter((c) => c.sub === 'start');
    // Each start read the state after it in its own process: no domstate process of its own.
    expect(starts.map((c) => c.commands.map((k) => k.sub))).toEqual(Array(3).fill(['start', 'echo', 'echo', 'domstate']));
    expect(bed.virsh.calls().slice(from).filter((c) => c.sub === 'domstate')).toEqual([]);
    expect(starts.map((c) => c.guest).slice(0, 2).sort()).toEqual([P.uuid, D.uuid].sort());
    expect(starts.map((c) => c.guest).slice(2)).toEqual([A.uuid]);
    expect(start.stdout).toContain('was destroyed at stop: started afresh');
    const s = await status(0);
    expect(s.pending).toEqual([]);
  }, 240_000);

  it('soft_restart: libvirtd restarted; virtlockd, virtlogd and the guests\' QEMUs keep their pids; no guest boots', async () => {
    mark();
    const before = bed.daemonPids();
    const qemu = all().map((g) => libvirtGuestPid(g));
    const r = await bed.run(['soft_restart']);
    expect(r.code, out(r)).toBe(0);
    const after = bed.daemonPids();
    expect(after.virtlockd).toBe(before.virtlockd);
    expect(after.virtlogd).toBe(before.virtlogd);
    expect(after.libvirtd).toBeGreaterThan(0);
    expect(after.libvirtd).not.toBe(before.libvirtd);
    expect(all().map((g) => libvirtGuestPid(g))).toEqual(qemu);
    expect(await states()).toEqual({ [A.name]: 'running', [P.name]: 'paused', [D.name]: 'running', [S.name]: 'running' });
    for (const g of all()) expect(readySince(g), g.name).toEqual([]);
    await status(0);
  }, 180_000);

  it('guests_reboot: each running guest boots exactly once more; the paused one is left alone', async () => {
    mark();
    const r = await bed.run(['guests_reboot']);
    expect(r.code, out(r)).toBe(0);
    for (const g of [A, D, S]) await expectFreshBoot(g);
    expect(readySince(P)).toEqual([]);
    expect(await domainState(P.uuid)).toBe('paused');
    await status(0);
  }, 180_000);

  it('restart with ON_SHUTDOWN=shutdown: A and S shut down cleanly, D destroyed (its policy), all three boot again, P (policy managedsave) saved and restored paused; new daemons; a failing modprobe is a warning', async () => {
    mark();
    const before = bed.daemonPids();
    const modprobe = recordingModprobe(1);
    const r = await bed.run(['restart'], { ON_SHUTDOWN: 'shutdown', ...modprobe.settings });
    // A modprobe that fails is a warning: libvirtd starts all the same.
    expect(r.code, out(r)).toBe(0);
    expect(modprobe.calls()).toEqual(['-a tun vhost_net']);
    expect(r.stdout + r.stderr).toContain('could not load the modules tun vhost_net');
    const after = bed.daemonPids();
    for (const n of ['virtlockd', 'virtlogd', 'libvirtd'] as const) {
      expect(after[n], n).toBeGreaterThan(0);
      expect(after[n], n).not.toBe(before[n]);
    }
    for (const g of [A, S]) expect(sinceMark(g), g.name).toContain(`RCL-POWEROFF boot=${boots.get(g)}`);
    // D's own policy (on_shutdown=destroy) is over ON_SHUTDOWN: destroyed, no power-off, started afresh.
    expect(sinceMark(D)).not.toContain('RCL-POWEROFF');
    expect(r.stdout).toContain('was destroyed at stop: started afresh');
    for (const g of [A, D, S]) await expectFreshBoot(g);
    expect(await domainState(P.uuid)).toBe('paused');
    expectRestored(P);
    await status(0);
  }, 240_000);

  it('guests_shutdown then shutdown (the README\'s way): every guest cleanly off, P in its first boot, nothing saved, daemons down', async () => {
    mark();
    const gs = await bed.run(['guests_shutdown']);
    expect(gs.code, out(gs)).toBe(0);
    for (const g of [A, P, D, S]) {
      expect(await domainState(g.uuid), g.name).toBe('shut off');
      // P's power-off carries the boot id of its first boot: restored twice, never rebooted.
      await waitForConsoleLine(g.consolePath, new RegExp(`^RCL-POWEROFF boot=${boots.get(g)}`, 'm'), { timeoutMs: 5000, fromOffset: marks.get(g) ?? 0 });
      expect(existsSync(join(SAVE_DIR, `${g.name}.save`)), g.name).toBe(false);
    }
    const pids = Object.values(bed.daemonPids()) as number[];
    expect(pids).toHaveLength(3);
    await status(0);
    const sh = await bed.run(['shutdown']);
    expect(sh.code, out(sh)).toBe(0);
    for (const pid of pids) expect(isPidAlive(pid)).toBe(false);
    for (const g of all()) expect(existsSync(join(SAVE_DIR, `${g.name}.save`)), g.name).toBe(false);
    const s = await status(3);
    expect(s.pending.map((p) => [p.name, p.action, p.stateBefore]).sort()).toEqual([
      [A.name, 'shutdown', 'running'], [D.name, 'shutdown', 'running'], [P.name, 'shutdown', 'paused'], [S.name, 'shutdown', 'running'],
    ].sort());
    bed.simulateReboot();
  }, 240_000);

  it('after the reboot, start with ON_BOOT=ignore boots only libvirt\'s autostart guest; the journal keeps the others', async () => {
    mark();
    const r = await bed.run(['start'], { ON_BOOT: 'ignore' });
    expect(r.code, out(r)).toBe(0);
    await expectFreshBoot(S);
    expect(await states()).toEqual({ [A.name]: 'shut off', [P.name]: 'shut off', [D.name]: 'shut off', [S.name]: 'running' });
    const s = await status(0);
    expect(s.pending.map((p) => p.name).sort()).toEqual(expect.arrayContaining([A.name, D.name, P.name]));
  }, 240_000);

  it('the next start (ON_BOOT=restore, START_DELAY=2) cold-boots the guests that ran, ascending order groups per lifecycle events, P paused', async () => {
    mark();
    // virsh event: one line per lifecycle event, in the order libvirtd saw them.
    const ev = spawn('virsh', ['-c', LIBVIRT_URI, 'event', '--loop', '--event', 'lifecycle'], { stdio: ['ignore', 'pipe', 'ignore'] });
    events.push(ev);
    let evText = '';
    ev.stdout.setEncoding('utf8').on('data', (d: string) => (evText += d));
    await new Promise((r) => setTimeout(r, 1000));
    const from = bed.virsh.calls().length;
    const r = await bed.run(['start'], { START_DELAY: '2' });
    expect(r.code, out(r)).toBe(0);
    await expectFreshBoot(A);
    await expectFreshBoot(D);
    expect(readySince(S)).toEqual([]);
    expect(await domainState(P.uuid)).toBe('paused');
    await waitFor('the Started events', () => (evText.match(/Started/g) ?? []).length >= 3, { timeoutMs: 10_000 });
    ev.kill('SIGTERM');
    const started = evText.split('\n').filter((l) => /: Started/.test(l)).map((l) => /for domain '([^']*)'/.exec(l)?.[1]);
    expect(started.slice(0, 2).sort()).toEqual([D.name, P.name].sort());
    expect(started.slice(2)).toEqual([A.name]);
    // START_DELAY between launches, from the wrapper's log.
    const starts = bed.virsh.calls().slice(from).filter((c) => c.sub === 'start').map((c) => c.startedAt);
    expect(starts).toHaveLength(3);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(1900);
    const s = await status(0);
    expect(s.pending.map((p) => p.name)).not.toContain(A.name);
  }, 240_000);

  it('guests_reboot over two URIs to the same libvirtd: each running guest rebooted once', async () => {
    mark();
    const from = bed.virsh.calls().length;
    const r = await bed.run(['guests_reboot'], { URIS: `${LIBVIRT_URI} ${SECOND_URI}` });
    expect(r.code, out(r)).toBe(0);
    const reboots = bed.virsh.calls().slice(from).filter((c) => c.sub === 'reboot').map((c) => c.guest);
    expect(reboots.sort()).toEqual([A.uuid, D.uuid, S.uuid].sort());
    for (const g of [A, D, S]) await expectFreshBoot(g);
  }, 180_000);

  it('-q says nothing when all is well; -v adds the debug lines (each virsh call)', async () => {
    const q = await bed.run(['-q', 'start']);
    expect(q.code, out(q)).toBe(0);
    expect(q.stdout).not.toContain('already running');
    // Warnings and errors only (docs/configuration.md): nothing at all when nothing went wrong.
    expect(q.stdout + q.stderr).toBe('');
    const n = await bed.run(['start']);
    expect(n.stdout).toContain('already running');
    expect(n.stdout).not.toMatch(/run: .*virsh-wrapper/);
    const v = await bed.run(['-v', 'start']);
    expect(v.code, out(v)).toBe(0);
    expect(v.stdout + v.stderr).toMatch(/run: .*virsh-wrapper/);
  }, 120_000);
});
