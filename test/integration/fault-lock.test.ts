// A shutdown command that finds the run lock held by a `guests_reboot`, on
// one real libvirt guest already running, through the installed script: the
// holder is asked to end (SIGTERM to its checked pid), the shutdown command
// takes the lock over and shuts the guest down cleanly.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLibvirtBed, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { domainState, LIBVIRT_URI } from '../helpers/virsh.js';
import { waitFor } from '../helpers/process.js';
import { consoleOffset, readConsole } from '../helpers/console.js';

// guests_shutdown leaves the daemons alone: nothing of the host's is stopped.
const SETTINGS = { URIS: LIBVIRT_URI, TIMEOUT: '120', MODULES: '' };

describe('a shutdown command finds the run lock held by guests_reboot', () => {
  let bed: LibvirtBed;

  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-flock-', { guests: [{ name: 'rcl flock one', memMiB: 128 }] });
  }, 25 * 60_000);
  afterAll(async () => {
    if (bed) await bed.close();
  }, 120_000);

  it('guests_shutdown asks the guests_reboot holder to end, takes the lock over and shuts the guest down cleanly; exit 0', async () => {
    const guest = bed.guests[0]!;
    const lockPath = join(bed.dir, 'run', 'rc.libvirt.lock');
    const readLock = (): string => {
      try {
        return readFileSync(lockPath, 'utf8');
      } catch {
        return '';
      }
    };
    const boot = guest.bootId();
    expect(boot).toBeDefined();
    // The reboot waits a minute in the wrapper before it reaches libvirt: the holder is busy with the guest.
    bed.virsh.setRules([{ sub: 'reboot', delayMs: 60_000 }]);
    const reboot = bed.run(['guests_reboot'], SETTINGS);
    const line = await waitFor('guests_reboot to hold the lock with its reboot call under way', () => {
      const l = readLock();
      return / guests_reboot -\n$/.test(l) && bed.virsh.calls().some((c) => c.sub === 'reboot') && l;
    }, { timeoutMs: 60_000, intervalMs: 200 });
    const holderPid = Number(line.split(' ')[0]);
    const from = consoleOffset(guest.consolePath);

    const shutdown = await bed.run(['guests_shutdown'], SETTINGS);
    const held = await reboot;
    bed.virsh.setRules([]);

    const out = shutdown.stdout + shutdown.stderr;
    expect(out).toContain(`another rc.libvirt run (pid ${holderPid}, "guests_reboot") holds the run lock: asked it to end (SIGTERM)`);
    expect(shutdown.signal, out).toBeNull();
    expect(shutdown.code, out).toBe(0);
    // The holder ended on the SIGTERM (exit 1, not killed by it), its guest reported interrupted.
    expect(held.signal, held.stdout + held.stderr).toBeNull();
    expect(held.code, held.stdout + held.stderr).toBe(1);
    expect(held.stderr).toContain('SIGTERM received');
    expect(held.stdout).toContain(`'${guest.name}': failed: interrupted`);
    const calls = bed.virsh.calls();
    // Its delayed reboot was ended with it: it never reached libvirt (no end line), and the guest never rebooted.
    const rebootCalls = calls.filter((c) => c.sub === 'reboot');
    expect(rebootCalls).toHaveLength(1);
    expect(rebootCalls[0]!.endedAt).toBeUndefined();
    // The shutdown came after the holder's takeover, and was clean: the guest powered off from the same boot, never destroyed.
    const shutdownCalls = calls.filter((c) => c.sub === 'shutdown');
    expect(shutdownCalls.length).toBeGreaterThan(0);
    expect(shutdownCalls.every((c) => c.startedAt >= rebootCalls[0]!.startedAt && c.exitCode === 0)).toBe(true);
    expect(shutdown.stdout).toContain(`'${guest.name}'  shutdown  shutdown`);
    expect(calls.filter((c) => c.sub === 'destroy')).toEqual([]);
    expect(readConsole(guest.consolePath).slice(from)).toContain(`RCL-POWEROFF boot=${boot}`);
    expect(await domainState(guest.uuid)).toBe('shut off');
    // Released: the file is empty (the lock free, no holder named).
    expect(readLock()).toBe('');
  }, 300_000);
});
