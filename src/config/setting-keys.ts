// Every setting name rc.libvirt reads from its settings file and the
// environment, described once: which Settings field it fills and how its value is checked.
import { MAX_SECONDS, type Settings } from './settings.js';
import { splitOptions } from './options-string.js';

/** How one setting is read. */
export interface SettingKeySpec {
  key: string;
  field: keyof Settings;
  /** Check and convert a raw value; throws an Error saying what is wrong. */
  parse: (raw: string) => unknown;
  /** An empty value means something (no options, no modules) rather than "not set". */
  emptyAllowed?: boolean;
  /** A duration's maximum in seconds (MAX_SECONDS): a larger value is clamped to it with a warning. */
  max?: number;
}

// A whole number; with a maximum, any larger one (however many digits) is returned for the caller to clamp.
function integer(min: number, max?: number) {
  return (raw: string): number => {
    const t = raw.trim();
    if (!/^[0-9]+$/.test(t)) throw new Error(`must be a whole number${max !== undefined ? ' of seconds' : ''}${min > 0 ? `, at least ${min}` : ' (0 or more)'}`);
    const n = Number(t);
    if (max !== undefined && n > max) return n;
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`must be a whole number of at least ${min}`);
    return n;
  };
}

function oneOf<T extends string>(...values: T[]) {
  return (raw: string): T => {
    const t = raw.trim();
    if (!(values as string[]).includes(t)) throw new Error(`must be one of ${values.join(', ')}`);
    return t as T;
  };
}

function absolutePath(raw: string): string {
  const t = raw.trim();
  if (!t.startsWith('/')) throw new Error('must be an absolute path');
  return t.replace(/(.)\/+$/, '$1');
}

function program(raw: string): string {
  const t = raw.trim();
  if (t === '' || /\s/.test(t)) throw new Error('must be a program path (or a name found on PATH)');
  return t;
}

function words(what: string, allowEmpty: boolean) {
  return (raw: string): string[] => {
    const list = raw.split(/\s+/).filter((w) => w !== '');
    if (!allowEmpty && list.length === 0) throw new Error(`must name at least one ${what}`);
    return list;
  };
}

function userName(raw: string): string {
  const t = raw.trim();
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(t)) throw new Error('must be a user or group name (or a number)');
  return t;
}

function daemonOptions(raw: string): string {
  splitOptions(raw); // throws on an unclosed quote
  return raw;
}

const spec = (key: string, field: keyof Settings, parse: (raw: string) => unknown, emptyAllowed = false): SettingKeySpec => ({
  key, field, parse, emptyAllowed,
});

// A duration in whole seconds, at least `min`, clamped to its maximum.
const duration = (key: string, field: keyof typeof MAX_SECONDS & keyof Settings, min: number): SettingKeySpec => ({
  ...spec(key, field, integer(min, MAX_SECONDS[field])),
  max: MAX_SECONDS[field],
});

/** The known setting names (common.md, cli-contract.md). */
export const SETTING_KEYS = {
  RC_LIBVIRT_CONFIG: spec('RC_LIBVIRT_CONFIG', 'configFile', absolutePath),
  TIMEOUT: duration('TIMEOUT', 'timeout', 1),
  PARALLEL: spec('PARALLEL', 'parallel', integer(0)),
  ON_SHUTDOWN: spec('ON_SHUTDOWN', 'onShutdown', oneOf('managedsave', 'shutdown', 'destroy')),
  ON_BOOT: spec('ON_BOOT', 'onBoot', oneOf('restore', 'ignore')),
  START_DELAY: duration('START_DELAY', 'startDelay', 0),
  DRIVER: spec('DRIVER', 'driver', oneOf('libvirt', 'qmp')),
  URIS: spec('URIS', 'uris', words('connection URI', false)),
  QEMU_GUESTS_DIR: spec('QEMU_GUESTS_DIR', 'guestsDir', absolutePath),
  QEMU_SAVE_DIR: spec('QEMU_SAVE_DIR', 'qemuSaveDir', absolutePath),
  RC_LIBVIRT_RUN_DIR: spec('RC_LIBVIRT_RUN_DIR', 'runDir', absolutePath),
  RC_LIBVIRT_STATE_DIR: spec('RC_LIBVIRT_STATE_DIR', 'stateDir', absolutePath),
  LIBVIRTD_OPTS: spec('LIBVIRTD_OPTS', 'libvirtdOpts', daemonOptions, true),
  LIBVIRT_OPTS: spec('LIBVIRT_OPTS', 'libvirtdOpts', daemonOptions, true),
  VIRTLOGD_OPTS: spec('VIRTLOGD_OPTS', 'virtlogdOpts', daemonOptions, true),
  VIRTLOCKD_OPTS: spec('VIRTLOCKD_OPTS', 'virtlockdOpts', daemonOptions, true),
  MODULES: spec('MODULES', 'modules', words('module', true), true),
  VIRTUSER: spec('VIRTUSER', 'virtUser', userName),
  VIRTGROUP: spec('VIRTGROUP', 'virtGroup', userName),
  VIRSH: spec('VIRSH', 'virsh', program),
  LIBVIRTD: spec('LIBVIRTD', 'libvirtd', program),
  VIRTLOGD: spec('VIRTLOGD', 'virtlogd', program),
  VIRTLOCKD: spec('VIRTLOCKD', 'virtlockd', program),
  DAEMON_TIMEOUT: duration('DAEMON_TIMEOUT', 'daemonTimeout', 1),
} satisfies Record<string, SettingKeySpec>;

/** A known setting name. */
export type SettingKey = keyof typeof SETTING_KEYS;
