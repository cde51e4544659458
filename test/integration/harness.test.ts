// The integration harness (test/helpers/rc-libvirt-harness.ts) at work: the
// installed shell script rc/rc.libvirt runs the bundle against the real
// libvirtd through a VIRSH wrapper that makes chosen calls slow or fail, and
// the wrapper's log shows each call and what was done to it. One guest,
// defined but not booted: `status` lists it all the same.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVirshWrapper, openLibvirtBed, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { LIBVIRT_URI } from '../helpers/virsh.js';

describe('rc/rc.libvirt through the harness', () => {
  let bed: LibvirtBed;
  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-harness-', { guests: [{ name: 'rcl harness one', memMiB: 64, start: false }] });
  }, 25 * 60_000);
  afterAll(async () => {
    await bed?.close();
  });

  it('status waits for a slow dumpxml of one guest and lists it; the log shows that call (the listing\'s one batch, which lists the connection first) delayed, the others passed', async () => {
    const guest = bed.guests[0]!;
    bed.virsh.setRules([{ sub: 'dumpxml', guest, delayMs: 500 }]);
    const r = await bed.run(['status'], { URIS: LIBVIRT_URI });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(guest.name);
    const calls = bed.virsh.calls();
    const ours = calls.filter((c) => c.commands.some((x) => x.sub === 'dumpxml' && x.guest === guest.uuid));
    expect(ours.map((c) => c.sub)).toEqual(['batch']);
    for (const c of ours) expect(c).toMatchObject({ rule: 'delayed', exitCode: 0 });
    // The guest's definition in /etc/libvirt/qemu named it: the one batch lists the connection (all guests, then
    // the filtered lists that stand for dominfo), then describes it.
    expect(ours[0]!.commands.filter((x) => x.sub !== 'echo').map((x) => x.sub)).toEqual([...Array<string>(7).fill('list'), 'domstate', 'dumpxml', 'dumpxml']);
    const others = calls.filter((c) => !ours.includes(c));
    expect(others.map((c) => c.sub)).toEqual(['version']);
    for (const c of others) expect(c.rule).toBe('passed');
    expect(calls.every((c) => c.argv.includes(LIBVIRT_URI))).toBe(true);
  });

  it('status with a `version` that fails: libvirtd runs but does not answer (exit 1), no guest is asked about', async () => {
    bed.virsh.setRules([{ sub: 'version', fail: 'failed to connect to the hypervisor' }]);
    const before = bed.virsh.calls().length;
    const r = await bed.run(['status'], { URIS: LIBVIRT_URI });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).toContain('failed to connect to the hypervisor');
    const calls = bed.virsh.calls().slice(before);
    expect(calls.map((c) => [c.sub, c.rule, c.exitCode])).toEqual([['version', 'failed', 1]]);
  });
});

// The wrapper's log is what the fault tests read: calls that start at the same
// moment (a save and the state read beside it) must each leave a whole line.
describe('the VIRSH wrapper\'s log', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-wrapper-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every call whole when many start together, short calls beside a batch of 20 kB', async () => {
    const real = join(dir, 'virsh-real');
    writeFileSync(real, '#!/bin/sh\nexit 0\n');
    chmodSync(real, 0o755);
    const w = createVirshWrapper(dir, real);
    const batch = Array.from({ length: 200 }, (_, i) => `echo @@m-${i}@@; dumpxml --domain=g${i} --xpath /domain/name --wrap`).join('; ');
    const runs: string[][] = [];
    for (let i = 0; i < 60; i++) {
      runs.push(['-c', 'qemu:///system', 'managedsave', '--verbose', `--domain=g${i}`]);
      runs.push(['-c', 'qemu:///system', 'domstate', '--reason', `--domain=g${i}`]);
      runs.push(['-c', 'qemu:///system', batch]);
    }
    await Promise.all(runs.map((argv) => promisify(execFile)(w.path, argv)));
    const calls = w.calls();
    const key = (argv: readonly string[]): string => argv.join('\u0000');
    expect(calls.map((c) => key(c.argv)).sort()).toEqual(runs.map(key).sort());
    expect(calls.filter((c) => c.sub === 'batch')).toHaveLength(60);
    for (const c of calls) expect(c.exitCode, c.argv.join(' ')).toBe(0);
  }, 60_000);
});
