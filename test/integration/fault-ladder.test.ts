// The stop ladder under faults, on real libvirtd and real QEMU guests, through
// the installed script (test/helpers/rc-libvirt-harness.ts), on guests booted
// once:
// - PARALLEL=1 with a short TIMEOUT: saves made slow (the VIRSH wrapper holds
//   each managedsave a few seconds before it runs), so the third guest never
//   gets a save slot in time: it is asked to shut down before its deadline,
//   outside the limit, and powers off cleanly (its console says so); every
//   guest saved or powered off, none destroyed, all journaled, exit 0.
// - A save still running at its deadline: its abort goes through the save's
//   own path — `domjobabort` repeated while managedsave runs (the first ones
//   find no job yet: the wrapper holds managedsave past the deadline) — and
//   only after managedsave has let go is the guest destroyed.
// `stop` runs with pidfiles of daemons that do not run (the bed's libvirtd is
// not stopped, no network is touched) and a recording `modprobe` first on PATH.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOURNAL_FILE, parseJournal } from '../../src/guests/journal.js';
import { consoleOffset, readConsole } from '../helpers/console.js';
import { startLibvirtGuest, type LibvirtGuest } from '../helpers/libvirt-guest.js';
import { openLibvirtBed, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';

let bed: LibvirtBed;
let bin: string;

// The settings of a `stop` that acts on the guests only (see the head).
function stopSettings(extra: Record<string, string>): Record<string, string> {
  const none = join(bed.dir, 'no-daemons');
  return {
    URIS: LIBVIRT_URI,
    ON_SHUTDOWN: 'managedsave',
    LIBVIRTD_OPTS: `-p ${none}/libvirtd.pid`,
    VIRTLOGD_OPTS: `-p ${none}/virtlogd.pid`,
    VIRTLOCKD_OPTS: `-p ${none}/virtlockd.pid`,
    MODULES: '',
    PATH: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    ...extra,
  };
}

async function hasManagedSave(g: LibvirtGuest): Promise<boolean> {
  return /^Managed save:\s+yes$/m.test(await virsh(['dominfo', `--domain=${g.uuid}`]));
}

function journal(): { name: string; action: string; stateBefore: string }[] {
  return parseJournal(readFileSync(join(bed.dir, 'state', JOURNAL_FILE), 'utf8'));
}

describe('stop ladder on real guests', () => {
  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-ladder-', {
      guests: ['one', 'two', 'three'].map((n) => ({ name: `rcl ladder ${n}`, memMiB: 128, fill: 16 })),
    });
    bin = join(bed.dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'modprobe'), `#!/bin/sh\necho "$@" >> ${JSON.stringify(join(bed.dir, 'modprobe.log'))}\n`);
    chmodSync(join(bin, 'modprobe'), 0o755);
  }, 25 * 60_000);
  afterAll(async () => {
    await bed?.close();
  });

  it('PARALLEL=1, short TIMEOUT: the guest that gets no save slot is shut down before its deadline; none destroyed', async () => {
    const from = new Map(bed.guests.map((g) => [g, consoleOffset(g.consolePath)]));
    // Each save takes 6 s and more; TIMEOUT 20 s keeps 10 s for a shutdown: the first save
    // ends after 6 s, the second takes the slot, the third still waits at 10 s.
    bed.virsh.setRules([{ sub: 'managedsave', delayMs: 6000 }]);
    const before = bed.virsh.calls().length;
    const r = await bed.run(['stop'], stopSettings({ PARALLEL: '1', TIMEOUT: '20' }), { timeoutMs: 120_000 });
    const out = `exit ${r.code}\n${r.stdout}${r.stderr}`;
    expect(r.code, out).toBe(0);
    const calls = bed.virsh.calls().slice(before);
    expect(calls.filter((c) => c.sub === 'destroy'), out).toEqual([]);
    const saved: string[] = [];
    const shut: string[] = [];
    for (const g of bed.guests) {
      expect(await domainState(g.uuid), g.name).toBe('shut off');
      const ours = calls.filter((c) => c.guest === g.uuid);
      if (await hasManagedSave(g)) {
        saved.push(g.name);
        expect(ours.some((c) => c.sub === 'managedsave'), g.name).toBe(true);
      } else {
        shut.push(g.name);
        // Never sent a save; asked to shut down, and powered off cleanly.
        expect(ours.some((c) => c.sub === 'managedsave'), g.name).toBe(false);
        expect(ours.some((c) => c.sub === 'shutdown'), g.name).toBe(true);
        expect(readConsole(g.consolePath).slice(from.get(g)), g.name).toMatch(/^RCL-POWEROFF/m);
      }
    }
    expect(saved.length, out).toBeGreaterThanOrEqual(1);
    expect(shut.length, out).toBeGreaterThanOrEqual(1);
    expect(out).toMatch(/no save slot \(PARALLEL=1\) until 10 s before its deadline: shut down instead/);
    const entries = journal();
    expect(entries.map((e) => `${e.name}:${e.action}:${e.stateBefore}`).sort()).toEqual(
      [...saved.map((n) => `${n}:saved:running`), ...shut.map((n) => `${n}:shutdown:running`)].sort(),
    );
  }, 180_000);

  it('a save still running at its deadline is aborted through repeated domjobabort before the guest is destroyed', async () => {
    const g = bed.guests[0]!;
    // Bring it back running: restored when saved (no new ready line), booted afresh when shut down.
    if (await hasManagedSave(g)) await virsh(['start', `--domain=${g.uuid}`]);
    else await startLibvirtGuest(g);
    expect(await domainState(g.uuid)).toBe('running');
    // The wrapper holds managedsave 6 s: at the deadline (4 s) libvirt has no job yet, so
    // the first job aborts find none; the abort goes on until managedsave has let go.
    // Throttle QEMU's own threads so the save, once it runs, is still running when an abort reaches it.
    const dom = `--domain=${g.uuid}`;
    await virsh(['schedinfo', dom, '--live', '--set', 'emulator_period=100000', '--set', 'emulator_quota=2000']);
    bed.virsh.setRules([{ sub: 'managedsave', delayMs: 6000 }]);
    const before = bed.virsh.calls().length;
    let r;
    try {
      r = await bed.run(['stop'], stopSettings({ PARALLEL: '0', TIMEOUT: '4' }), { timeoutMs: 120_000 });
    } finally {
      if ((await domainState(g.uuid)) === 'running') await virsh(['schedinfo', dom, '--live', '--set', 'emulator_quota=-1']).catch(() => undefined);
    }
    const out = `exit ${r.code}\n${r.stdout}${r.stderr}`;
    const calls = bed.virsh.calls().slice(before).filter((c) => c.guest === g.uuid);
    const save = calls.find((c) => c.sub === 'managedsave');
    const aborts = calls.filter((c) => c.sub === 'domjobabort');
    const destroy = calls.find((c) => c.sub === 'destroy');
    expect(save, out).toBeDefined();
    expect(aborts.length, out).toBeGreaterThan(1);
    // Aborts go on past the moment libvirt began the save job (the wrapper let managedsave run).
    expect(Math.max(...aborts.map((c) => c.startedAt)), out).toBeGreaterThan(save!.startedAt + 6000);
    // managedsave let go (the job aborted), then the guest — running again — was destroyed, after every abort.
    expect(save!.endedAt, out).toBeDefined();
    expect(save!.exitCode, out).not.toBe(0);
    expect(destroy, out).toBeDefined();
    expect(destroy!.startedAt).toBeGreaterThanOrEqual(save!.endedAt!);
    for (const a of aborts) expect(a.startedAt).toBeLessThan(destroy!.startedAt);
    expect(r.code, out).toBe(1);
    expect(out).toMatch(/still saving at its deadline \(4 s\)/);
    expect(journal().find((e) => e.name === g.name)?.action).toBe('destroyed');
    expect(await hasManagedSave(g)).toBe(false);
    expect(await domainState(g.uuid)).toBe('shut off');
  }, 180_000);
});
