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
} satisfies Settings);
