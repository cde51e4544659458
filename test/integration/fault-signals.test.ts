// Faults around a `stop` that is not the guests' fault, on one real libvirt
// guest already running, through the installed script: a console that is gone
// (stdout closed at once), SIGHUP one second in (the ssh session running it
// dropped), and a lock file that a non-root account replaced with a symlink.
// Each run's guest ends saved and journaled, or running; never forgotten.
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLibvirtBed, RC_SCRIPT, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { domainState, LIBVIRT_URI, runVirsh } from '../helpers/virsh.js';
import { identifyPid, runCommand, terminateProcess, type ProcessIdentity } from '../helpers/process.js';
import { removeLibvirtGuests } from '../helpers/libvirt-guest.js';
import { runRc, type CliRun } from '../helpers/rc-cli.js';

/** libvirt's managed save images (qemu:///system). */
const MANAGED_SAVE_DIR = '/var/lib/libvirt/qemu/save';

const SETTINGS = { URIS: LIBVIRT_URI, TIMEOUT: '120', MODULES: '' };

interface JournalFile {
  entries: { id: string; action: string }[];
}

describe('stop with its console gone, with SIGHUP, and with a planted lock symlink', () => {
  let bed: LibvirtBed;
  const journal = (): JournalFile['entries'] => {
    const path = join(bed.dir, 'state', 'journal.json');
    return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as JournalFile).entries : [];
  };
  const managedSave = async (uuid: string): Promise<boolean> => /Managed save:\s+yes/.test((await runVirsh(['dominfo', `--domain=${uuid}`])).stdout);

  // `start` brings the saved guest back from its image: the same boot goes on.
  async function restoreAndCheck(): Promise<void> {
    const guest = bed.guests[0]!;
    const boot = guest.bootId();
    const r = await bed.run(['start'], SETTINGS);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await domainState(guest.uuid)).toBe('running');
    expect(guest.bootId()).toBe(boot);
    expect(journal().filter((e) => e.id === guest.uuid)).toEqual([]);
  }

  // `stop` ends the bed's daemons and `start` starts new ones: those are this
  // file's to end (by checked pid, while it still holds the host-wide lock).
  const DAEMONS = ['libvirtd', 'virtlogd', 'virtlockd'];
  const daemonIds = (): (ProcessIdentity | undefined)[] =>
    DAEMONS.map((name) => {
      try {
        return identifyPid(Number.parseInt(readFileSync(`/run/libvirt/${name}.pid`, 'utf8'), 10));
      } catch {
        return undefined;
      }
    });
  let bedDaemons: (ProcessIdentity | undefined)[] = [];

  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-fsig-', { guests: [{ name: 'rcl fsig one', memMiB: 128 }] });
    bedDaemons = daemonIds();
  }, 25 * 60_000);
  afterAll(async () => {
    if (!bed) return;
    await removeLibvirtGuests();
    const now = daemonIds();
    for (let i = 0; i < DAEMONS.length; i++) {
      const id = now[i];
      if (id && (id.pid !== bedDaemons[i]?.pid || id.startTime !== bedDaemons[i]?.startTime)) await terminateProcess(id, 20_000);
    }
    await bed.close();
  }, 120_000);

  it('stop with stdout closed at once (EPIPE on every write) saves the guest, journals it and exits 0', async () => {
    const guest = bed.guests[0]!;
    const r = await new Promise<CliRun>((resolve, reject) => {
      const child = spawn(RC_SCRIPT, ['stop'], { env: bed.env(SETTINGS), stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.destroy(); // its reader is gone before the first line
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: '', stderr });
      });
    });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    // libvirtd is stopped too now: libvirt's managed save image and the journal say the guest was saved.
    expect(existsSync(join(MANAGED_SAVE_DIR, `${guest.name}.save`))).toBe(true);
    expect(journal()).toEqual([expect.objectContaining({ id: guest.uuid, action: 'saved' })]);
    await restoreAndCheck();
  }, 600_000);

  it('stop with SIGHUP one second in: exit 1, not killed by the signal; the guest saved and journaled, or running; never forgotten', async () => {
    const guest = bed.guests[0]!;
    // The save starts 3 s late, so the SIGHUP comes while the guest step runs (not once the daemons are being stopped).
    bed.virsh.setRules([{ sub: 'managedsave', delayMs: 3000 }]);
    let sent = false;
    const r = await runRc(['stop'], bed.env(SETTINGS), {
      program: RC_SCRIPT,
      onStdout: (_all, kill) => {
        if (sent) return;
        sent = true;
        setTimeout(() => kill('SIGHUP'), 1000);
      },
    });
    expect(sent).toBe(true);
    expect(r.signal, r.stdout + r.stderr).toBeNull();
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toContain('SIGHUP received');
    bed.virsh.setRules([]);
    const state = await domainState(guest.uuid);
    const entries = journal().filter((e) => e.id === guest.uuid);
    if (state === 'shut off') {
      expect(await managedSave(guest.uuid)).toBe(true);
      expect(entries).toEqual([expect.objectContaining({ action: 'saved' })]);
      await restoreAndCheck();
    } else {
      expect(state).toBe('running');
      expect(await managedSave(guest.uuid)).toBe(false);
      expect(entries).toEqual([]);
    }
  }, 600_000);

  it('guests_shutdown as root with the lock file replaced by a non-root account\'s symlink: the decoy is untouched, the guest handled, exit 1', async () => {
    const guest = bed.guests[0]!;
    // A run directory as an earlier version left it: owned by an unprivileged account, which plants the symlink.
    const top = join(bed.dir, 'sym');
    mkdirSync(top, { mode: 0o755 });
    chmodSync(bed.dir, 0o755);
    const runDir = join(top, 'run');
    mkdirSync(runDir, { mode: 0o755 });
    chownSync(runDir, 65534, 65534);
    const decoy = join(top, 'decoy');
    writeFileSync(decoy, 'root-owned, not to be written\n', { mode: 0o644 });
    const before = statSync(decoy);
    const plant = await runCommand('runuser', ['-u', 'nobody', '--', 'ln', '-s', decoy, join(runDir, 'rc.libvirt.lock')]);
    expect(plant.code, plant.stderr).toBe(0);
    expect(lstatSync(join(runDir, 'rc.libvirt.lock')).uid).toBe(65534);

    const r = await bed.run(['guests_shutdown'], { ...SETTINGS, RC_LIBVIRT_RUN_DIR: runDir });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toContain(`${join(runDir, 'rc.libvirt.lock')} was a symlink (to ${decoy})`);
    // The run directory is taken back (root, 0700), as every directory of rc.libvirt's own is.
    expect(r.stderr).toContain(`${runDir} was owner 65534:65534 mode 0755: set to 0:0 mode 0700`);
    expect(statSync(runDir).uid).toBe(0);
    expect(statSync(runDir).mode & 0o7777).toBe(0o700);
    expect(readFileSync(decoy, 'utf8')).toBe('root-owned, not to be written\n');
    expect(statSync(decoy).mtimeMs).toBe(before.mtimeMs);
    expect(statSync(decoy).size).toBe(before.size);
    const aside = readdirSync(runDir).filter((f) => f.startsWith('rc.libvirt.lock.unsafe-'));
    expect(aside).toHaveLength(1);
    expect(readlinkSync(join(runDir, aside[0]!))).toBe(decoy);
    const lock = lstatSync(join(runDir, 'rc.libvirt.lock'));
    expect(lock.isFile() && lock.uid === 0 && (lock.mode & 0o777) === 0o600).toBe(true);
    expect(await domainState(guest.uuid)).toBe('shut off');
  }, 600_000);
});
