// Faults in the settings and the programs at `stop`, on real libvirtd and real
// QEMU guests, through the installed script (the harness): a settings file with
// a bad line, an unknown key and bad values; TIMEOUT=99999999 (meant as "never
// destroy", once an overflowed timer that fired every deadline at once); a
// mistyped VIRTLOCKD. In each case every running guest is saved (libvirt's
// managed save image present, the journal names it), the run says what was
// wrong, and the exit code tells it (6, 0 with a warning, 5).
//
// `stop` also stops the daemons it finds by their pidfiles: each run is given
// pidfiles in the bed's directory (LIBVIRTD_OPTS...), so it finds none running
// and leaves the bed's (maybe reused) daemons alone; MODULES is empty (no
// module of the host is touched). The guests are booted once; after each case
// `virsh start` restores them from their managed save for the next.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLibvirtBed, type LibvirtBed } from '../helpers/rc-libvirt-harness.js';
import { domainState, LIBVIRT_URI, virsh } from '../helpers/virsh.js';

describe('stop with faulty settings and a missing program (real libvirtd, real guests)', () => {
  let bed: LibvirtBed;
  let settingsFile: string;
  let round = 0;

  beforeAll(async () => {
    bed = await openLibvirtBed('rcl-fault-settings-', {
      guests: [
        { name: 'rcl fault settings one', memMiB: 128 },
        { name: 'rcl fault settings two', memMiB: 128 },
      ],
    });
    settingsFile = join(bed.dir, 'settings');
  }, 25 * 60_000);
  afterAll(async () => {
    await bed?.close();
  });

  // The environment of one `stop`: the bed's daemons are not ours to stop, so the pidfiles point elsewhere; a fresh state directory per case.
  function settings(extra: Record<string, string> = {}): { env: Record<string, string>; stateDir: string } {
    round += 1;
    const stateDir = join(bed.dir, `state-${round}`);
    const pid = (d: string): string => ` -f /etc/libvirt/${d}.conf -p ${join(bed.dir, `${d}.pid`)} `;
    return {
      stateDir,
      env: {
        URIS: LIBVIRT_URI,
        MODULES: '',
        LIBVIRTD_OPTS: pid('libvirtd'),
        VIRTLOGD_OPTS: pid('virtlogd'),
        VIRTLOCKD_OPTS: pid('virtlockd'),
        RC_LIBVIRT_STATE_DIR: stateDir,
        ...extra,
      },
    };
  }

  // Every bed guest is shut off with a managed save image, and the journal of the run names it as saved.
  async function expectAllSaved(stateDir: string): Promise<void> {
    const journal = JSON.parse(readFileSync(join(stateDir, 'journal.json'), 'utf8')) as unknown;
    const entries = (Array.isArray(journal) ? journal : (journal as { entries: unknown[] }).entries) as { id: string; action: string }[];
    for (const g of bed.guests) {
      expect(await domainState(g.uuid)).toBe('shut off');
      expect(await virsh(['dominfo', `--domain=${g.uuid}`])).toMatch(/Managed save:\s+yes/);
      expect(entries).toContainEqual(expect.objectContaining({ id: g.uuid, action: 'saved' }));
    }
  }

  // Bring the guests back (libvirt restores them from their managed save) for the next case.
  async function resumeGuests(): Promise<void> {
    for (const g of bed.guests) {
      if ((await domainState(g.uuid)) !== 'running') await virsh(['start', `--domain=${g.uuid}`]);
      expect(await domainState(g.uuid)).toBe('running');
    }
  }

  it('a bad line, an unknown key and bad values: every guest saved, every error named file:line, exit 6', async () => {
    writeFileSync(
      settingsFile,
      ['# faults', 'TIMEOUT=5m', 'NO_SUCH_SETTING=1', 'ON_SHUTDOWN=hibernate', 'this is not a setting', 'PARALLEL=2', ''].join('\n'),
    );
    const { env, stateDir } = settings();
    // -q: errors are never hidden.
    const r = await bed.run(['-q', 'stop'], env, { timeoutMs: 120_000 });
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(6);
    expect(r.stderr).toContain(`${settingsFile}:2: TIMEOUT: must be a whole number of seconds, at least 1 (got "5m")`);
    expect(r.stderr).toContain(`${settingsFile}:3: NO_SUCH_SETTING: unknown setting`);
    expect(r.stderr).toContain(`${settingsFile}:4: ON_SHUTDOWN: must be one of managedsave, shutdown, destroy`);
    expect(r.stderr).toContain(`${settingsFile}:5: not a KEY=value line`);
    expect(r.stderr).toContain('4 errors in the settings');
    await expectAllSaved(stateDir);
  }, 150_000);

  it('TIMEOUT=99999999: clamped to 7 days with a warning, never fires at once; every guest saved, exit 0', async () => {
    await resumeGuests();
    writeFileSync(settingsFile, 'TIMEOUT=99999999\n');
    const { env, stateDir } = settings();
    const r = await bed.run(['stop'], env, { timeoutMs: 120_000 });
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(0);
    expect(r.stderr).toContain(`${settingsFile}:1: TIMEOUT: 99999999 s is above the maximum of 604800 s: 604800 s is used`);
    expect(out).not.toMatch(/TimeoutOverflowWarning|destroy/i);
    await expectAllSaved(stateDir);
  }, 150_000);

  it('VIRTLOCKD=/nonexistent: the guests are saved all the same, the missing program named, exit 5', async () => {
    await resumeGuests();
    writeFileSync(settingsFile, '# good settings\n');
    const { env, stateDir } = settings({ VIRTLOCKD: '/nonexistent/virtlockd' });
    const r = await bed.run(['-q', 'stop'], env, { timeoutMs: 120_000 });
    const out = r.stdout + r.stderr;
    expect(r.code, out).toBe(5);
    expect(r.stderr).toContain('not installed or not executable: virtlockd (/nonexistent/virtlockd)');
    await expectAllSaved(stateDir);
  }, 150_000);
});
