// The three libvirt daemons, each described once: its binary, its options
// (from the settings, split into argv) and the pidfile it writes.
import { basename } from 'node:path';
import { ConfigError } from '../config/errors.js';
import { splitOptions } from '../config/options-string.js';
import type { Settings } from '../config/settings.js';

/** A daemon rc.libvirt manages. */
export type DaemonName = 'virtlockd' | 'virtlogd' | 'libvirtd';

/** The order `start` brings them up; `stop` takes them down in reverse. */
export const START_ORDER: readonly DaemonName[] = ['virtlockd', 'virtlogd', 'libvirtd'];

/** One daemon, as rc.libvirt runs it. */
export interface DaemonSpec {
  name: DaemonName;
  /** The program (a path, or a name on PATH). */
  binary: string;
  /** Its options, from LIBVIRTD_OPTS / VIRTLOGD_OPTS / VIRTLOCKD_OPTS. */
  options: string[];
  /** The pidfile: from its `-p`/`--pid-file` option, else /var/run/libvirt/NAME.pid. */
  pidfile: string;
  /** The full argv `start` runs: binary, -d (daemonize), -l for libvirtd (listen), then the options. */
  startArgv: string[];
}

const SETTING_NAMES: Record<DaemonName, string> = {
  libvirtd: 'LIBVIRTD_OPTS',
  virtlogd: 'VIRTLOGD_OPTS',
  virtlockd: 'VIRTLOCKD_OPTS',
};

/** The description of one daemon from the settings. */
export function describeDaemon(settings: Settings, name: DaemonName): DaemonSpec {
  const raw = name === 'libvirtd' ? settings.libvirtdOpts : name === 'virtlogd' ? settings.virtlogdOpts : settings.virtlockdOpts;
  let options: string[];
  try {
    options = splitOptions(raw);
  } catch (err) {
    throw new ConfigError(`${SETTING_NAMES[name]}: ${(err as Error).message}`, { key: SETTING_NAMES[name] });
  }
  const binary = settings[name];
  const pidfile = pidfileOption(options) ?? `/var/run/libvirt/${name}.pid`;
  const startArgv = [binary, '-d', ...(name === 'libvirtd' ? ['-l'] : []), ...options.filter((o) => o !== '-d' && o !== '--daemon')];
  return { name, binary, options, pidfile, startArgv };
}

/** All three, in start order. */
export function describeDaemons(settings: Settings): DaemonSpec[] {
  return START_ORDER.map((n) => describeDaemon(settings, n));
}

// -p FILE, --pid-file FILE, --pid-file=FILE, -pFILE (the daemons' getopt forms).
function pidfileOption(options: string[]): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < options.length; i++) {
    const o = options[i] as string;
    if ((o === '-p' || o === '--pid-file') && i + 1 < options.length) found = options[++i];
    else if (o.startsWith('--pid-file=')) found = o.slice('--pid-file='.length);
    else if (/^-p./.test(o)) found = o.slice(2);
  }
  return found;
}

/** The daemon's program name, as /proc shows it (for identity checks). */
export function programName(spec: DaemonSpec): string {
  return basename(spec.binary);
}
