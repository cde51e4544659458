// Faults around the listing at `stop`, on real libvirtd and two running guests
// (booted once), through the installed rc/rc.libvirt and the VIRSH wrapper:
// - one guest's `dumpxml` hangs: the listing's batch virsh (every guest's
//   calls over one connection) hangs with it and is ended at its deadline;
//   each guest is then asked on its own: the stuck one is still handled (by
//   UUID, saved with the settings' defaults), the other is saved as usual,
//   the summary names the undescribed guest, and the run exits non-zero;
// - libvirtd answers `virsh version` only after 15 s while everything else
//   works: not hung; both guests are saved and libvirtd is stopped normally
//   (never killed), exit 0.
// Each `stop` ends the daemons; they are started again (and the guests
// restored from their images) before the next case and before the bed closes.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readJournal } from '../../src/guests/journal.js';
import { readConsole } from '../helpers/console.js';
import { startLibvirtDaemons, type LibvirtDaemons } from '../helpers/daemons.js';
import { openLibvirtBed, type LibvirtBed, type VirshRule } from '../helpers/rc-libvirt-harness.js';
import type { LibvirtGuest } from '../helpers/libvirt-guest.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';
import { identifyPid, isSameProcessAlive, type ProcessIdentity } from '../helpers/process.js';

const SAVE_DIR = '/var/lib/libvirt/qemu/save';
const SETTINGS = { URIS: LIBVIRT_URI, TIMEOUT: '120', VIRTUSER: 'root', VIRTGROUP: 'root', MODULES: '' };

describe('stop: faults around the listing', () => {
  let bed: LibvirtBed;
  let healthy: LibvirtGuest;
  let stuck: LibvirtGuest;
  let daemons: LibvirtDaemons;

  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-fault-listing-', { guests: [{ name: 'rcl listing healthy', memMiB: 128, readyTimeoutMs: 300_000 }, { name: 'rcl listing stuck', memMiB: 128, readyTimeoutMs: 300_000 }] });
    [healthy, stuck] = bed.guests as [LibvirtGuest, LibvirtGuest];
    daemons = bed.daemons;
    // `stop` ends libvirtd: only one this file started may be ended.
    if (bed.daemons.reused.length > 0) {
      const names = bed.daemons.reused.map((d) => d.name).join(', ');
      await bed.close();
      throw new Error(`these tests run \`stop\`, which ends the daemons: ${names} ran already and are not ours to end`);
    }
  }, 25 * 60_000);

  afterAll(async () => {
    await bed?.close();
  });

  // Each case ends with a stop (or fails part way): the daemons and guests come back for the next case and for the bed's close.
  afterEach(async () => {
    await bringBack();
  }, 10 * 60_000);

  // After a stop: the daemons again (tracked, ended when the bed closes), each guest back from its image, a fresh state dir.
  async function bringBack(): Promise<void> {
    const again = await startLibvirtDaemons();
    // Still running (a case that failed before its stop): the ones started before stay the ones to check.
    if (again.started.some((d) => d.name === 'libvirtd')) daemons = again;
    for (const g of bed.guests) {
      if ((await domainState(g.uuid)) !== 'running') await virsh(['start', `--domain=${g.uuid}`]);
      expect(await domainState(g.uuid)).toBe('running');
    }
    rmSync(join(bed.dir, 'state'), { recursive: true, force: true });
  }

  function libvirtdPid(): ProcessIdentity {
    const pid = daemons.started.find((d) => d.name === 'libvirtd')?.pid;
    if (pid === undefined) throw new Error('no libvirtd started by this file');
    const id = identifyPid(pid);
    if (!id) throw new Error(`libvirtd (pid ${pid}) is gone`);
    return id;
  }

  // `stop` with the wrapper's rules: its exit code, its output, and the virsh calls it made.
  async function stopWith(rules: VirshRule[]): Promise<{ code: number | null; out: string; since: number }> {
    const since = bed.virsh.calls().length;
    bed.virsh.setRules(rules);
    try {
      const r = await bed.run(['stop'], SETTINGS, { timeoutMs: 5 * 60_000 });
      return { code: r.code, out: r.stdout + r.stderr, since };
    } finally {
      bed.virsh.setRules([]);
    }
  }

  // Saved (image on disk, libvirt says so once back) and never destroyed: no destroy call went out.
  async function expectSaved(g: LibvirtGuest, since: number, out: string): Promise<void> {
    expect(existsSync(join(SAVE_DIR, `${g.name}.save`)), `${g.name}: managed save image\n${out}`).toBe(true);
    const destroys = bed.virsh.calls().slice(since).filter((c) => c.sub === 'destroy' && c.guest === g.uuid);
    expect(destroys, `${g.name} destroyed`).toEqual([]);
    expect(readConsole(g.consolePath)).not.toContain('RCL-POWEROFF');
  }

  it("one guest's dumpxml hangs: it is still saved (by UUID, with the settings' defaults), the other is saved as usual, the summary names it, exit 1", async () => {
    const { code, out, since } = await stopWith([{ sub: 'dumpxml', guest: stuck, delayMs: 120_000 }]);
    expect(code, out).toBe(1);
    await expectSaved(healthy, since, out);
    await expectSaved(stuck, since, out);
    // The summary row and the error line name it and what was missing.
    expect(out).toMatch(new RegExp(`'rcl listing stuck'\\s+save\\s+saved\\s+[\\d.]+\\s+not described in time \\(dumpxml: no answer within 15\\.0 s`));
    expect(out).toContain(`not described in time, handled with safe defaults: 'rcl listing stuck' (${stuck.uuid}): save with defaults for policy, saveBlockers`);
    expect(out).not.toMatch(/does not answer|its guests are not handled|rescue/);
    expect(out).toContain('libvirtd stopped');
    // The batch (both guests' calls in one virsh) was held by the stuck guest's dumpxml and ended at its deadline.
    const calls = bed.virsh.calls().slice(since);
    const batches = calls.filter((c) => c.sub === 'batch');
    expect(batches.map((c) => [c.rule, c.endedAt])).toEqual([['delayed', undefined]]);
    for (const g of [healthy, stuck]) expect(batches[0]!.commands.filter((c) => c.guest === g.uuid).map((c) => c.sub)).toEqual(['domstate', 'dumpxml', 'dumpxml']);
    expect(out).toMatch(/the virsh describing 2 guests at once was not done within 2\.2 s \(ended\); the guests it had not described are asked one by one/);
    // Then each guest on its own (dumpxml: only the listing asks it): the stuck guest's were cut at its deadline, the healthy guest's answered.
    const dumpxml = (g: LibvirtGuest) => calls.filter((c) => c.sub === 'dumpxml' && c.guest === g.uuid).map((c) => [c.rule, c.exitCode]);
    expect(dumpxml(stuck)).toEqual([['delayed', undefined], ['delayed', undefined]]);
    expect(dumpxml(healthy)).toEqual([['passed', 0], ['passed', 0]]);
    expect(calls.some((c) => c.sub === 'managedsave' && c.guest === stuck.uuid && c.exitCode === 0)).toBe(true);
    const journal = await readJournal(join(bed.dir, 'state'));
    expect(journal.entries.map((e) => [e.id, e.action, e.stateBefore]).sort()).toEqual([[healthy.uuid, 'saved', 'running'], [stuck.uuid, 'saved', 'running']].sort());
  }, 10 * 60_000);

  it('libvirtd answers `virsh version` after 15 s and the listing after 2 s, so that the ping goes out: not hung, both saved, libvirtd stopped (not killed), exit 0', async () => {
    const libvirtd = libvirtdPid();
    // A listing that answers within FIRST_PING_MS (1 s) needs no ping: held 2 s, it has one asked.
    const { code, out, since } = await stopWith([{ sub: 'version', delayMs: 15_000 }, { sub: 'list', delayMs: 2_000 }]);
    expect(code, out).toBe(0);
    await expectSaved(healthy, since, out);
    await expectSaved(stuck, since, out);
    expect(out).not.toMatch(/counted as hung|does not answer|rescue|SIGKILL|killed/);
    expect(out).toContain('libvirtd stopped');
    expect(isSameProcessAlive(libvirtd)).toBe(false);
    // Both saves ran through libvirtd, which answered them.
    const calls = bed.virsh.calls().slice(since);
    for (const g of [healthy, stuck]) expect(calls.some((c) => c.sub === 'managedsave' && c.guest === g.uuid && c.exitCode === 0)).toBe(true);
    // One ping, asked a second after the listing's virsh (FIRST_PING_MS), which was still held then.
    const pings = calls.filter((c) => c.sub === 'version' && c.rule === 'delayed');
    expect(pings).toHaveLength(1);
    const listing = calls.find((c) => c.sub === 'batch')!;
    expect(pings[0]!.startedAt - listing.startedAt).toBeGreaterThanOrEqual(900);
    // The listing: one virsh that lists the connection and describes both guests (three calls each; their
    // definitions name them, and the filtered lists give what dominfo would), none asked on its own, no `list` alone.
    const batches = calls.filter((c) => c.sub === 'batch');
    expect(batches.map((c) => [c.rule, c.exitCode])).toEqual([['delayed', 0]]);
    expect(batches[0]!.commands.filter((c) => c.sub === 'list')).toHaveLength(7);
    for (const g of [healthy, stuck]) expect(batches[0]!.commands.filter((c) => c.guest === g.uuid).map((c) => c.sub)).toEqual(['domstate', 'dumpxml', 'dumpxml']);
    expect(calls.filter((c) => c.sub === 'list' || c.sub === 'dominfo')).toEqual([]);
    expect(calls.filter((c) => c.sub === 'dumpxml')).toEqual([]);
    const journal = await readJournal(join(bed.dir, 'state'));
    expect(journal.entries.map((e) => [e.id, e.action]).sort()).toEqual([[healthy.uuid, 'saved'], [stuck.uuid, 'saved']].sort());
  }, 10 * 60_000);
});
