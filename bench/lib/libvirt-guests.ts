// libvirt's own libvirt-guests.sh (Debian's libvirt-daemon package), run on
// the bench's guests. The script sets its defaults and then sources
// /etc/default/libvirt-guests, so settings cannot come from the environment;
// and it keeps state in /var/lib/libvirt/libvirt-guests and
// /var/lock/libvirt-guests. To leave the host as it was, the bench runs a
// copy whose only change is those two folders (sysconfdir, localstatedir)
// pointing into a temp folder that holds the settings file.
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../../test/helpers/process.js';
import { checkRun, timedRun, type TimedRun } from './timed.js';

// Where Debian ships it.
export const LIBVIRT_GUESTS_SCRIPT = '/usr/lib/libvirt/libvirt-guests.sh';

/** Settings written to the copy's default/libvirt-guests. */
export interface LibvirtGuestsSettings {
  ON_SHUTDOWN: 'suspend' | 'shutdown';
  ON_BOOT?: 'start' | 'ignore';
  PARALLEL_SHUTDOWN?: number;
  SHUTDOWN_TIMEOUT?: number;
}

/** The prepared copy. */
export interface LibvirtGuests {
  /** Runs `stop` or `start` with these settings. */
  run(command: 'stop' | 'start', settings: LibvirtGuestsSettings): Promise<TimedRun>;
  close(): Promise<void>;
}

// Makes the relocated copy of libvirt-guests.sh in a temp folder.
export async function prepareLibvirtGuests(): Promise<LibvirtGuests> {
  let text: string;
  try {
    text = await readFile(LIBVIRT_GUESTS_SCRIPT, 'utf8');
  } catch (err) {
    throw new Error(`${LIBVIRT_GUESTS_SCRIPT} is missing (Debian package libvirt-daemon; run: node testbed/setup.mjs): ${(err as Error).message}`);
  }
  const dir = await makeTempDir('rcl-bench-lg-');
  const relocated = text
    .replace(/^sysconfdir=.*$/m, `sysconfdir="${dir}/etc"`)
    .replace(/^localstatedir=.*$/m, `localstatedir="${dir}/var"`);
  if (!relocated.includes(`sysconfdir="${dir}/etc"`) || !relocated.includes(`localstatedir="${dir}/var"`)) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${LIBVIRT_GUESTS_SCRIPT}: no sysconfdir=/localstatedir= lines to relocate; has the script changed?`);
  }
  await mkdir(join(dir, 'etc', 'default'), { recursive: true });
  await mkdir(join(dir, 'var', 'lib', 'libvirt'), { recursive: true });
  await mkdir(join(dir, 'var', 'lock'), { recursive: true });
  const script = join(dir, 'libvirt-guests.sh');
  await writeFile(script, relocated);
  await chmod(script, 0o755);
  return {
    async run(command, settings) {
      const lines = [
        'URIS=qemu:///system',
        `ON_SHUTDOWN=${settings.ON_SHUTDOWN}`,
        `ON_BOOT=${settings.ON_BOOT ?? 'start'}`,
        `PARALLEL_SHUTDOWN=${settings.PARALLEL_SHUTDOWN ?? 0}`,
        `SHUTDOWN_TIMEOUT=${settings.SHUTDOWN_TIMEOUT ?? 300}`,
      ];
      await writeFile(join(dir, 'etc', 'default', 'libvirt-guests'), `${lines.join('\n')}\n`);
      // A list left by an earlier stop makes the next stop do nothing ("last stop was not followed by start").
      if (command === 'stop') await rm(join(dir, 'var', 'lib', 'libvirt', 'libvirt-guests'), { force: true });
      const run = await timedRun([script, command], { timeoutMs: 900_000 });
      return checkRun(run, `libvirt-guests.sh ${command} (${lines.slice(1).join(' ')})`);
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
