// The setting names of common.md and cli-contract.md, with the Settings field each fills:
// the docs and the shipped settings file are checked against this list and against DEFAULTS.
import type { Settings } from '../../src/config/settings.js';

/** Every setting a settings file may hold, and its field in Settings. */
export const SETTING_FIELDS = {
  TIMEOUT: 'timeout',
  PARALLEL: 'parallel',
  ON_SHUTDOWN: 'onShutdown',
  ON_BOOT: 'onBoot',
  START_DELAY: 'startDelay',
  DRIVER: 'driver',
  URIS: 'uris',
  QEMU_GUESTS_DIR: 'guestsDir',
  QEMU_SAVE_DIR: 'qemuSaveDir',
  RC_LIBVIRT_RUN_DIR: 'runDir',
  RC_LIBVIRT_STATE_DIR: 'stateDir',
  LIBVIRTD_OPTS: 'libvirtdOpts',
  VIRTLOGD_OPTS: 'virtlogdOpts',
  VIRTLOCKD_OPTS: 'virtlockdOpts',
  MODULES: 'modules',
  VIRTUSER: 'virtUser',
  VIRTGROUP: 'virtGroup',
  VIRSH: 'virsh',
  LIBVIRTD: 'libvirtd',
  VIRTLOGD: 'virtlogd',
  VIRTLOCKD: 'virtlockd',
  DAEMON_TIMEOUT: 'daemonTimeout',
} as const satisfies Record<string, keyof Settings>;

/** The names of SETTING_FIELDS. */
export const SETTING_NAMES = Object.keys(SETTING_FIELDS) as (keyof typeof SETTING_FIELDS)[];
