// The settings rc.libvirt runs with, and their defaults (see docs/configuration.md).
// Precedence: option > environment > config file > default.

/** What `stop` does to a guest. */
export type ShutdownAction = 'managedsave' | 'shutdown' | 'destroy';

/** What `start` does with the guests the last `stop` handled. */
export type BootAction = 'restore' | 'ignore';

/** Which domain-control driver acts on the guests. */
export type DriverName = 'libvirt' | 'qmp';

/** Every setting, resolved. */
export interface Settings {
  /** The settings file that was read (or would have been). */
  configFile: string;
  /** Seconds before still-active guests are destroyed. */
  timeout: number;
  /** Guests handled at once; 0 = all. */
  parallel: number;
  onShutdown: ShutdownAction;
  onBoot: BootAction;
  /** Seconds between guest starts at boot. */
  startDelay: number;
  driver: DriverName;
  /** libvirt connections to act on. */
  uris: string[];
  /** qmp driver: guest definitions (NAME.json). */
  guestsDir: string;
  /** qmp driver: saved images. */
  qemuSaveDir: string;
  /** rc.libvirt's runtime directory (lock file, qmp sockets and pidfiles). */
  runDir: string;
  /** rc.libvirt's state directory (the journal of what stop did). */
  stateDir: string;
  libvirtdOpts: string;
  virtlogdOpts: string;
  virtlockdOpts: string;
  /** Kernel modules loaded at start (the KVM modules are added by CPU flags). */
  modules: string[];
  virtUser: string;
  virtGroup: string;
  /** Programs. */
  virsh: string;
  libvirtd: string;
  virtlogd: string;
  virtlockd: string;
  /** Seconds to wait for libvirtd to answer after starting it. */
  daemonTimeout: number;
  /**
   * Set when DRIVER or URIS could not be read at a command that runs at host
   * shutdown: the run acts on every guest it can find, through libvirt at its
   * default URI and through the qmp driver (QEMUs running from the runtime
   * directory) both. Never set from a settings file.
   */
  everyDriver: boolean;
}

/**
 * The largest value of each duration, in seconds. A larger one is clamped to
 * it with a warning, never wrapped (Node's timers take at most 2^31-1 ms, about
 * 24.8 days; the deadline helper chains beyond that, so these bounds are about
 * sense, not about timers). TIMEOUT's 7 days is the way to say "never destroy".
 */
export const MAX_SECONDS = Object.freeze({
  /** TIMEOUT, and a guest's own policy timeout (libvirt metadata, qmp definition): 7 days. */
  timeout: 7 * 24 * 3600,
  /** START_DELAY: 1 hour between two guest starts. */
  startDelay: 3600,
  /** DAEMON_TIMEOUT: 1 hour for libvirtd to answer. */
  daemonTimeout: 3600,
});

/** A guest's own policy timeout (seconds) within MAX_SECONDS.timeout; `clamped` when it was above. */
export function clampGuestTimeout(seconds: number): { seconds: number; clamped: boolean } {
  return seconds > MAX_SECONDS.timeout ? { seconds: MAX_SECONDS.timeout, clamped: true } : { seconds, clamped: false };
}

/** The defaults, as the original script had them where it had them. */
export const DEFAULTS: Readonly<Settings> = Object.freeze({
  configFile: '/etc/default/libvirt',
  timeout: 300,
  parallel: 0,
  onShutdown: 'managedsave',
  onBoot: 'restore',
  startDelay: 0,
  driver: 'libvirt',
  uris: ['qemu:///system'],
  guestsDir: '/etc/qemu/guests',
  qemuSaveDir: '/var/lib/rc-libvirt/qemu-save',
  runDir: '/run/rc-libvirt',
  stateDir: '/var/lib/libvirt/rc-libvirt',
  libvirtdOpts: ' -f /etc/libvirt/libvirtd.conf -p /var/run/libvirt/libvirtd.pid ',
  virtlogdOpts: ' -f /etc/libvirt/virtlogd.conf -p /var/run/libvirt/virtlogd.pid ',
  virtlockdOpts: ' -f /etc/libvirt/virtlockd.conf -p /var/run/libvirt/virtlockd.pid ',
  modules: ['tun', 'vhost_net'],
  virtUser: 'root',
  virtGroup: 'users',
  virsh: '/usr/bin/virsh',
  libvirtd: '/usr/sbin/libvirtd',
  virtlogd: '/usr/sbin/virtlogd',
  virtlockd: '/usr/sbin/virtlockd',
  daemonTimeout: 30,
  everyDriver: false,
} satisfies Settings);
