// End to end with DRIVER=qmp: rc/rc.libvirt (the installed shell script, with
// RC_LIBVIRT_BUNDLE) on real QEMU guests, across simulated reboots (every
// QEMU gone and rc-libvirt's run directory, with its QMP sockets and
// pidfiles, removed), three small test guests booted once:
//   W  `web=1`, autostart, policy order 1 (a name QEMU's -name once misread)
//   C  `q,two "x" $y`, autostart, policy order 2 (commas, quotes, $)
//   T  `q three`, not autostart, booted by the test, then paused
// Each test builds on the state the one before left.
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Status } from '../../src/rc/status.js';
import { withQmp } from '../../src/qmp/qmp-client.js';
import { consoleOffset, readConsole, waitForConsoleLine, waitForGuestReady } from '../helpers/console.js';
import { isPidAlive } from '../helpers/process.js';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { RC_BUNDLE, RC_SCRIPT } from '../helpers/rc-libvirt-harness.js';
import { runRc, type CliRun } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';

const W = 'web=1';
const C = 'q,two "x" $y';
const T = 'q three';
const NAMES = [W, C, T];

let bed: QmpBed;
const boots = new Map<string, string>();
let marks = new Map<string, number>();

const sig = (ms = 60_000): AbortSignal => AbortSignal.timeout(ms);
const out = (r: CliRun): string => `exit ${r.code}\n${r.stdout}${r.stderr}`;

function rc(args: string[], settings: Record<string, string> = {}): Promise<CliRun> {
  return runRc(args, bed.env({ RC_LIBVIRT_BUNDLE: RC_BUNDLE, ...settings }), { program: RC_SCRIPT });
}

function mark(): void {
  marks = new Map(NAMES.map((n) => [n, consoleOffset(bed.consoleOf(n))]));
}

function readySince(n: string): string[] {
  return [...readConsole(bed.consoleOf(n)).slice(marks.get(n) ?? 0).matchAll(/^RCL-READY boot=(\S+)/gm)].map((m) => m[1] as string);
}

async function expectFreshBoot(n: string): Promise<void> {
  await waitForGuestReady(bed.consoleOf(n), { timeoutMs: 150_000, fromOffset: marks.get(n) ?? 0 });
  const ids = readySince(n);
  expect(ids, n).toHaveLength(1);
  expect(ids[0], n).not.toBe(boots.get(n));
  boots.set(n, ids[0] as string);
}

// The QEMU of a guest per its pidfile in the run directory, if it runs.
function qemuPid(n: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(bed.qmpRunDir, `${n}.pid`), 'utf8').trim());
    return pid > 0 && isPidAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

// Restored from its image: QEMU started with -incoming, no boot on the console since the mark.
function expectRestored(n: string): void {
  const pid = qemuPid(n);
  expect(pid, n).toBeGreaterThan(0);
  expect(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0'), n).toContain('-incoming');
  expect(readySince(n), n).toEqual([]);
}

async function status(code: number): Promise<Status> {
  const text = await rc(['status']);
  expect(text.code, out(text)).toBe(code);
  const json = await rc(['status', '--json']);
  expect(json.code, out(json)).toBe(code);
  return JSON.parse(json.stdout) as Status;
}

async function states(): Promise<Record<string, string | undefined>> {
  const json = JSON.parse((await rc(['status', '--json'])).stdout) as Status;
  return Object.fromEntries(NAMES.map((n) => [n, json.guests.find((g) => g.name === n)?.state]));
}

function snapshot(): unknown {
  const files: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      const st = lstatSync(p);
      files.push(`${p} ${st.isDirectory() || st.isSocket() ? '-' : st.size} ${st.isSocket() ? '' : st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  for (const d of [bed.runDir, bed.stateDir, bed.saveDir, bed.guestsDir]) walk(d);
  return { files, qemu: NAMES.map(qemuPid), consoles: NAMES.map((n) => consoleOffset(bed.consoleOf(n))) };
}

function simulateReboot(): void {
  for (const n of NAMES) expect(qemuPid(n), `${n} still runs`).toBeUndefined();
  rmSync(bed.runDir, { recursive: true, force: true });
}

describe('rc/rc.libvirt end to end with DRIVER=qmp, across simulated reboots', () => {
  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-e2e-qmp-', [
      { name: W, memMiB: 96, autostart: true, policy: { order: 1 } },
      { name: C, memMiB: 96, autostart: true, policy: { order: 2 } },
      { name: T, memMiB: 96 },
    ]);
  }, 60_000);

  afterAll(async () => {
    await bed?.cleanup();
  });

  it('start boots the autostart guests (names with =, commas, quotes, $); --dry-run before it starts nothing; status 3, then 0', async () => {
    expect((await status(3)).guests.every((g) => g.state === 'shutoff')).toBe(true);
    const dry = await rc(['start', '--dry-run']);
    expect(dry.code, out(dry)).toBe(0);
    expect(dry.stdout).toContain(`order 1: ${W}: start (autostart)`);
    expect(dry.stdout).toContain('(dry run: nothing was changed)');
    expect(NAMES.map(qemuPid)).toEqual([undefined, undefined, undefined]);
    mark();
    const r = await rc(['start']);
    expect(r.code, out(r)).toBe(0);
    await expectFreshBoot(W);
    await expectFreshBoot(C);
    expect(readFileSync(`/proc/${qemuPid(W)}/cmdline`, 'latin1').split('\0')).toContain(`guest=${W}`);
    boots.set(T, await bed.boot(bed.driver(), T));
    await withQmp(join(bed.qmpRunDir, `${T}.qmp`), { signal: sig() }, (q) => q.execute('stop', undefined, { signal: sig() }));
    const s = await status(0);
    expect(Object.fromEntries(s.guests.map((g) => [g.name, g.state]))).toEqual({ [W]: 'running', [C]: 'running', [T]: 'paused' });
  }, 300_000);

  it('every --dry-run and plan change nothing: QEMUs, consoles, the run, state, save and guests directories', async () => {
    const before = snapshot();
    const cmds = [
      ['start', '--dry-run'], ['stop', '--dry-run'], ['shutdown', '--dry-run'], ['restart', '--dry-run'], ['soft_restart', '--dry-run'],
      ['guests_shutdown', '--dry-run'], ['guests_reboot', '--dry-run'], ['plan'], ['plan', '--json'],
    ];
    for (const c of cmds) {
      const r = await rc(c);
      expect(r.code, `${c.join(' ')}: ${out(r)}`).toBe(0);
      if (c[0] === 'stop') for (const n of NAMES) expect(r.stdout, n).toContain(n);
    }
    expect(snapshot()).toEqual(before);
  }, 180_000);

  it('stop saves all three; after a reboot start restores each in the same boot, the paused one paused', async () => {
    const pids = NAMES.map(qemuPid) as number[];
    const stop = await rc(['stop']);
    expect(stop.code, out(stop)).toBe(0);
    for (const p of pids) expect(isPidAlive(p)).toBe(false);
    expect(readdirSync(bed.saveDir).length).toBeGreaterThanOrEqual(3);
    const down = await status(3);
    expect(down.pending.map((p) => [p.name, p.action, p.stateBefore]).sort()).toEqual([
      [C, 'saved', 'running'], [T, 'saved', 'paused'], [W, 'saved', 'running'],
    ].sort());
    simulateReboot();
    mark();
    const start = await rc(['start']);
    expect(start.code, out(start)).toBe(0);
    for (const n of NAMES) expectRestored(n);
    expect(await states()).toEqual({ [W]: 'running', [C]: 'running', [T]: 'paused' });
    expect((await status(0)).pending).toEqual([]);
  }, 240_000);

  it('guests_reboot boots each running guest exactly once more; soft_restart changes nothing; restart saves and restores', async () => {
    mark();
    const r = await rc(['guests_reboot']);
    expect(r.code, out(r)).toBe(0);
    await expectFreshBoot(W);
    await expectFreshBoot(C);
    expect(readySince(T)).toEqual([]);
    const pids = NAMES.map(qemuPid);
    const soft = await rc(['soft_restart']);
    expect(soft.code, out(soft)).toBe(0);
    expect(NAMES.map(qemuPid)).toEqual(pids);
    await status(0);
    mark();
    const restart = await rc(['restart']);
    expect(restart.code, out(restart)).toBe(0);
    for (const n of NAMES) {
      expect(qemuPid(n), n).not.toBe(pids[NAMES.indexOf(n)]);
      expectRestored(n);
    }
    expect(await states()).toEqual({ [W]: 'running', [C]: 'running', [T]: 'paused' });
  }, 300_000);

  it('guests_shutdown then shutdown: each guest powers off in its boot, nothing saved; after a reboot ON_BOOT=ignore boots the autostart guests only', async () => {
    mark();
    const gs = await rc(['guests_shutdown']);
    expect(gs.code, out(gs)).toBe(0);
    for (const n of NAMES) {
      await waitForConsoleLine(bed.consoleOf(n), new RegExp(`^RCL-POWEROFF boot=${boots.get(n)}`, 'm'), { timeoutMs: 5000, fromOffset: marks.get(n) ?? 0 });
      expect(qemuPid(n), n).toBeUndefined();
    }
    const sh = await rc(['shutdown']);
    expect(sh.code, out(sh)).toBe(0);
    const s = await status(3);
    expect(s.pending.map((p) => [p.name, p.action]).sort()).toEqual([[C, 'shutdown'], [T, 'shutdown'], [W, 'shutdown']].sort());
    expect(s.guests.every((g) => !g.savedImage)).toBe(true);
    simulateReboot();
    mark();
    const ign = await rc(['start'], { ON_BOOT: 'ignore' });
    expect(ign.code, out(ign)).toBe(0);
    // The qmp driver's autostart is what libvirtd's is on libvirt: not a restore, so ON_BOOT=ignore does not hold it back.
    expect({ [W]: qemuPid(W) !== undefined, [C]: qemuPid(C) !== undefined, [T]: qemuPid(T) !== undefined }, out(ign)).toEqual({ [W]: true, [C]: true, [T]: false });
    await expectFreshBoot(W);
    await expectFreshBoot(C);
  }, 300_000);

  it('the next start (ON_BOOT=restore) brings back the rest: every guest that ran is up again, booted once since the reboot, the paused one paused', async () => {
    const again = await rc(['start']);
    expect(again.code, out(again)).toBe(0);
    expect(await states()).toEqual({ [W]: 'running', [C]: 'running', [T]: 'paused' });
    await waitForGuestReady(bed.consoleOf(W), { timeoutMs: 150_000, fromOffset: marks.get(W) ?? 0 });
    await waitForGuestReady(bed.consoleOf(C), { timeoutMs: 150_000, fromOffset: marks.get(C) ?? 0 });
    // Since the reboot (the mark before ON_BOOT=ignore): one boot each, whichever start made it.
    expect(readySince(W)).toHaveLength(1);
    expect(readySince(C)).toHaveLength(1);
    expect((await status(0)).pending).toEqual([]);
  }, 300_000);
});
