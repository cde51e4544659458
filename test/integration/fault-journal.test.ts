// The journal and rc.libvirt's own directories under faults, through the
// installed script (rc/rc.libvirt) on the real libvirtd, with two guests booted
// once for the file: the state and run directories made root's 0700 at start;
// a full state directory (a small tmpfs) makes stop exit 1 naming the journal,
// the guests saved all the same; a lost journal still restores every saved image
// (ON_BOOT=restore) and leaves them with ON_BOOT=ignore; libvirt's managed save
// is never restored twice (gone once the guest runs from it; a guest destroyed
// after that is cold-booted); a symlink planted as journal.json is not followed;
// an entry of another connection is kept, one of a vanished guest dropped.
// stop ends the daemons (rc.libvirt's own stop), so the file needs daemons it
// started itself; the ones each `start` brings up are recorded and stopped by pid.
// Holds the host-wide libvirtd lock for the whole file.
import { randomUUID } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JOURNAL_FILE, type JournalEntry } from '../../src/guests/journal.js';
import { waitForGuestReady, consoleOffset } from '../helpers/console.js';
import { recordTestDaemons, startLibvirtDaemons, type DaemonName } from '../helpers/daemons.js';
import { findPidsByComm, identifyPid, isPidAlive, runCommand, type ProcessIdentity } from '../helpers/process.js';
import { openLibvirtBed, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { requireTestbed } from '../helpers/testbed.js';
import type { CliRun } from '../helpers/rc-cli.js';
import { libvirtGuestPid } from '../helpers/libvirt-guest.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';

const DAEMONS: readonly DaemonName[] = ['virtlockd', 'virtlogd', 'libvirtd'];
const NOBODY = 65534;
// libvirt's managed save images (qemu driver, system instance).
const MANAGED_SAVE_DIR = '/var/lib/libvirt/qemu/save';

describe('the journal and its directories under faults (rc/rc.libvirt, real libvirtd)', () => {
  let bed: LibvirtBed;
  let stateDir: string;
  let runDir: string;
  let full: string | undefined;
  // The real virsh: no call here needs the wrapper's delays or failures (and a wrapped `virsh event` would outlive its kill).
  const settings = { URIS: LIBVIRT_URI, MODULES: '', VIRTUSER: 'root', VIRTGROUP: 'root', TIMEOUT: '120', DAEMON_TIMEOUT: '60', VIRSH: requireTestbed().virsh };
  const run = async (args: string[], extra: Record<string, string> = {}): Promise<CliRun> => {
    try {
      return await bed.run(args, { ...settings, ...extra }, { timeoutMs: 300_000 });
    } finally {
      rememberDaemons();
    }
  };
  const all = (r: CliRun): string => `${r.stdout}\n${r.stderr}`;

  // The daemons rc.libvirt's `start` brought up are ours to stop (afterAll, by pid, through the bed).
  const seen = new Map<number, { name: DaemonName; id: ProcessIdentity }>();
  function rememberDaemons(): void {
    for (const name of DAEMONS) {
      let pid: number;
      try {
        pid = Number(readFileSync(`/run/libvirt/${name}.pid`, 'utf8').trim());
      } catch {
        continue;
      }
      if (!Number.isInteger(pid) || !isPidAlive(pid) || !findPidsByComm(name).includes(pid)) continue;
      const id = identifyPid(pid);
      if (id) seen.set(pid, { name, id });
    }
    recordTestDaemons([...seen.values()].filter((d) => isPidAlive(d.id.pid)));
  }

  const managedSave = async (uuid: string): Promise<boolean> => /Managed save:\s+yes/.test(await virsh(['dominfo', `--domain=${uuid}`]));
  const plant = async (entries: JournalEntry[]): Promise<void> => {
    await writeFile(join(stateDir, JOURNAL_FILE), JSON.stringify({ version: 1, entries }));
  };
  const entry = (g: { name: string; uuid: string }, over: Partial<JournalEntry> = {}): JournalEntry => ({
    uri: LIBVIRT_URI, id: g.uuid, name: g.name, action: 'saved', stateBefore: 'running', order: 0, at: new Date().toISOString(), ...over,
  });
  const journalEntries = async (): Promise<JournalEntry[]> => (JSON.parse(await readFile(join(stateDir, JOURNAL_FILE), 'utf8')) as { entries: JournalEntry[] }).entries;
  let boots: (string | undefined)[] = [];
  // Shut-off guests with a managed save image that are not this file's (left by other test runs on this
  // shared libvirtd): every `start` tries to restore them too (the image is the record) and may fail them.
  let foreign: string[] = [];
  // A start went well for this file's guests: exit 0, or 1 only for failures of foreign guests, never of ours.
  const expectStartOk = (r: CliRun): void => {
    const failed = /guests failed: (.*)/.exec(r.stderr)?.[1];
    if (failed === undefined) {
      expect(r.code, all(r)).toBe(0);
      return;
    }
    expect(foreign.length, all(r)).toBeGreaterThan(0);
    for (const g of bed.guests) expect(failed, all(r)).not.toContain(g.name);
    expect(failed.split(', ').every((n) => foreign.includes(n)), all(r)).toBe(true);
  };

  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-fault-journal-', { guests: [{ name: 'rcl journal one', memMiB: 128 }, { name: 'rcl journal two', memMiB: 128 }] });
    const daemons = await startLibvirtDaemons();
    if (daemons.reused.length > 0) {
      throw new Error(`this file stops libvirtd through rc.libvirt, so it must start its own; running already: ${daemons.reused.map((d) => `${d.name} ${d.pid}`).join(', ')}`);
    }
    for (const d of daemons.started) {
      const id = identifyPid(d.pid);
      if (id) seen.set(d.pid, { name: d.name, id });
    }
    stateDir = join(bed.dir, 'state');
    runDir = join(bed.dir, 'run');
    const ours = new Set(bed.guests.map((g) => g.name));
    foreign = (await virsh(['list', '--all', '--with-managed-save', '--name'])).split('\n').map((n) => n.trim()).filter((n) => n && !ours.has(n));
    if (foreign.length > 0) console.warn(`guests of others with a managed save image on this libvirtd (start tries them too): ${foreign.join(', ')}`);
    // A non-root user must reach the directories to show what the mode keeps them from.
    await chmod(bed.dir, 0o755);
  }, 25 * 60_000);

  afterAll(async () => {
    if (full) await runCommand('umount', [full], { timeoutMs: 30_000 });
    // The guests are removed while a libvirtd runs (a stop may have ended it).
    if (!findPidsByComm('libvirtd').length) await run(['start'], { ON_BOOT: 'ignore' });
    await bed?.close();
  }, 5 * 60_000);

  it('start makes the state and run directories root 0700 though another user owned them, and says so; that user can then plant nothing', async () => {
    for (const d of [stateDir, runDir]) {
      await mkdir(d, { recursive: true });
      await chown(d, NOBODY, NOBODY);
      await chmod(d, 0o755);
    }
    const r = await run(['start']);
    expectStartOk(r);
    for (const d of [stateDir, runDir]) {
      expect(r.stderr).toContain(`${d} was owner ${NOBODY}:${NOBODY} mode 0755: set to 0:0 mode 0700`);
      const st = await stat(d);
      expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o700]);
    }
    const plantAsNobody = await runCommand('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'ln', '-s', '/etc/passwd', join(stateDir, JOURNAL_FILE)], { timeoutMs: 10_000 });
    expect(plantAsNobody.code, plantAsNobody.stderr).not.toBe(0);
    expect(plantAsNobody.stderr).toMatch(/Permission denied/);
    await expect(lstat(join(stateDir, JOURNAL_FILE))).rejects.toThrow(/ENOENT/);
  }, 600_000);

  it('a full state directory (a 16 KiB tmpfs): stop saves every guest, exits 1 and names the journal', async () => {
    full = join(bed.dir, 'full');
    await mkdir(full, { mode: 0o700 });
    const m = await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=16k,mode=0700', 'tmpfs', full], { timeoutMs: 30_000 });
    expect(m.code, m.stderr).toBe(0);
    // Fill it: the journal's temp file can be created, not written.
    await runCommand('sh', ['-c', `head -c 1048576 /dev/zero > '${full}/fill'`], { timeoutMs: 30_000 });
    expect((await stat(join(full, 'fill'))).size).toBeLessThanOrEqual(16 * 1024);
    boots = bed.guests.map((g) => g.bootId());
    expect(boots.every(Boolean)).toBe(true);
    const r = await run(['stop'], { RC_LIBVIRT_STATE_DIR: full });
    expect(r.code, all(r)).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`journal ${full}/journal\\.json failed: .*no space left on device.*start restores the saved images without it`));
    // libvirtd is down now (stop ends it): the images are seen on disk, their QEMUs gone.
    for (const g of bed.guests) {
      expect(r.stdout).toMatch(new RegExp(`'${g.name}' +save +saved .*saved, but not in the journal`));
      expect((await stat(join(MANAGED_SAVE_DIR, `${g.name}.save`))).size).toBeGreaterThan(0);
      expect(libvirtGuestPid(g)).toBeUndefined();
    }
    expect((await runCommand('umount', [full], { timeoutMs: 30_000 })).code).toBe(0);
    full = undefined;
  }, 600_000);

  it('a lost journal: start with ON_BOOT=ignore leaves the saved guests; with ON_BOOT=restore restores every image (the same boot) and says so', async () => {
    await expect(lstat(join(stateDir, JOURNAL_FILE))).rejects.toThrow(/ENOENT/);
    const ignore = await run(['start'], { ON_BOOT: 'ignore' });
    expect(ignore.code, all(ignore)).toBe(0);
    for (const g of bed.guests) {
      expect(all(ignore)).toContain(`'${g.name}': not in the journal, has a saved image: ON_BOOT=ignore: left as it is`);
      expect(await domainState(g.uuid)).toBe('shut off');
      expect(await managedSave(g.uuid)).toBe(true);
    }
    const r = await run(['start']);
    expectStartOk(r);
    for (const [i, g] of bed.guests.entries()) {
      expect(all(r)).toContain(`'${g.name}': not in the journal, has a saved image: restoring it`);
      expect(r.stdout).toMatch(new RegExp(`'${g.name}' +restore +restored`));
      expect(await domainState(g.uuid)).toBe('running');
      expect(g.bootId()).toBe(boots[i]);
    }
  }, 600_000);

  it("libvirt's managed save is never restored twice: gone once the guest runs; a replanted entry finds it running; destroyed, it is cold-booted", async () => {
    const [one, two] = bed.guests as [LibvirtBed['guests'][0], LibvirtBed['guests'][0]];
    for (const g of bed.guests) expect(await managedSave(g.uuid)).toBe(false);
    await virsh(['destroy', `--domain=${two.uuid}`]);
    const from = consoleOffset(two.consolePath);
    const oldBoot = two.bootId();
    await plant([entry(one), entry(two)]);
    const r = await run(['start']);
    expectStartOk(r);
    expect(r.stdout).toMatch(new RegExp(`'${one.name}' +start +skipped .*already running`));
    expect(r.stdout).not.toMatch(new RegExp(`'${one.name}' +restore +restored`));
    expect(one.bootId()).toBe(boots[0]);
    expect(r.stdout).toMatch(new RegExp(`'${two.name}' +start +started .*its saved image is gone: started afresh`));
    const newBoot = await waitForGuestReady(two.consolePath, { timeoutMs: 120_000, fromOffset: from });
    expect(newBoot).not.toBe(oldBoot);
    expect(await journalEntries()).toEqual([]);
    boots = bed.guests.map((g) => g.bootId());
  }, 600_000);

  it('a symlink planted as journal.json is not followed: the root-owned decoy stays untouched; stop saves the guests into a real journal', async () => {
    const decoy = join(bed.dir, 'decoy');
    await writeFile(decoy, 'root decoy\n', { mode: 0o644 });
    const before = await stat(decoy);
    // As a link left from before the directory was root's 0700 would be (root plants it here: no one else can now).
    await rm(join(stateDir, JOURNAL_FILE), { force: true });
    await symlink(decoy, join(stateDir, JOURNAL_FILE));
    const r = await run(['stop']);
    expect(r.code, all(r)).toBe(1);
    expect(r.stderr).toContain(`journal ${stateDir}/journal.json is a symbolic link: not followed`);
    expect(await readFile(decoy, 'utf8')).toBe('root decoy\n');
    expect((await stat(decoy)).mtimeMs).toBe(before.mtimeMs);
    expect((await lstat(join(stateDir, JOURNAL_FILE))).isFile()).toBe(true);
    expect((await journalEntries()).map((e) => e.name).sort()).toEqual(bed.guests.map((g) => g.name).sort());
    // libvirtd is down (stop ended it): the images are seen on disk.
    for (const g of bed.guests) expect((await stat(join(MANAGED_SAVE_DIR, `${g.name}.save`))).size).toBeGreaterThan(0);
    const back = await run(['start']);
    expectStartOk(back);
    for (const g of bed.guests) expect(all(back)).not.toContain(`'${g.name}': not in the journal`);
    for (const [i, g] of bed.guests.entries()) {
      expect(await domainState(g.uuid)).toBe('running');
      expect(g.bootId()).toBe(boots[i]);
    }
    expect(await readFile(decoy, 'utf8')).toBe('root decoy\n');
  }, 600_000);

  it('an entry of another connection is kept and is no failure; an entry of a vanished guest is dropped with a warning', async () => {
    const other: JournalEntry = { uri: 'qmp:///etc/qemu/guests', id: 'vm1', name: 'vm1', action: 'saved', stateBefore: 'running', order: 0, at: new Date().toISOString() };
    const gone = entry({ name: 'rcl journal gone', uuid: randomUUID() });
    await plant([other, gone]);
    const r = await run(['start']);
    expectStartOk(r);
    expect(r.stderr).toContain(`journal entry of guest 'rcl journal gone' (${gone.id}) on ${LIBVIRT_URI}: no such guest any more: entry dropped`);
    expect(/guests failed: (.*)/.exec(r.stderr)?.[1] ?? '').not.toMatch(/vm1|rcl journal/);
    expect((await journalEntries()).filter((e) => !foreign.includes(e.name))).toEqual([other]);
  }, 600_000);
});
