// The directories the daemons and rc.libvirt need before they start, and the
// owner check the SlackBuild README asks for: VIRTUSER/VIRTGROUP must match
// qemu.conf's `user`/`group` ("keep this in sync with what qemu uses").
import { chmod, chown, mkdir, readFile } from 'node:fs/promises';
import type { Settings } from '../config/settings.js';
import type { Log } from '../util/log.js';

/** libvirtd's runtime directories (the original script made the same ones). */
export const LIBVIRT_RUNTIME_DIRS = ['/run/libvirt/lockd', '/run/libvirt/lxc', '/run/libvirt/network', '/run/libvirt/qemu/swtpm'];

/** Where qemu.conf lives. */
export const QEMU_CONF = '/etc/libvirt/qemu.conf';

/** A user or group name (or number) resolved against /etc/passwd or /etc/group. */
export function resolveId(name: string, table: string): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of table.split('\n')) {
    const [n, , id] = line.split(':');
    if (n === name && id !== undefined && /^\d+$/.test(id)) return Number(id);
  }
  return undefined;
}

/** Create libvirt's runtime directories and rc.libvirt's run and state directories (owner VIRTUSER:VIRTGROUP, mode 0750). */
export async function makeRuntimeDirs(settings: Settings, log: Log): Promise<void> {
  for (const d of LIBVIRT_RUNTIME_DIRS) await mkdir(d, { recursive: true, mode: 0o755 });
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  const group = await readFile('/etc/group', 'utf8').catch(() => '');
  const uid = resolveId(settings.virtUser, passwd);
  const gid = resolveId(settings.virtGroup, group);
  if (uid === undefined) log.warn(`VIRTUSER ${settings.virtUser}: no such user; ${settings.runDir} and ${settings.stateDir} stay owned by root`);
  if (gid === undefined) log.warn(`VIRTGROUP ${settings.virtGroup}: no such group; ${settings.runDir} and ${settings.stateDir} stay owned by root`);
  for (const d of [settings.runDir, settings.stateDir]) {
    await mkdir(d, { recursive: true, mode: 0o750 });
    try {
      await chown(d, uid ?? 0, gid ?? 0);
      await chmod(d, 0o750);
    } catch (err) {
      log.warn(`${d}: cannot set owner ${settings.virtUser}:${settings.virtGroup} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
}

/** qemu.conf's `user` and `group` settings (undefined where it leaves them at libvirt's default). */
export function parseQemuConfOwner(text: string): { user?: string; group?: string } {
  const out: { user?: string; group?: string } = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(user|group)\s*=\s*"([^"]*)"\s*(#.*)?$/.exec(line);
    if (m) out[m[1] as 'user' | 'group'] = m[2] as string;
  }
  return out;
}

/** Warn when qemu.conf runs QEMU as another user or group than VIRTUSER/VIRTGROUP. */
export async function checkQemuConfOwner(settings: Settings, log: Log, path = QEMU_CONF): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return;
  const conf = parseQemuConfOwner(text);
  const diffs: string[] = [];
  if (conf.user !== undefined && conf.user.replace(/^\+/, '') !== settings.virtUser) diffs.push(`user "${conf.user}" but VIRTUSER=${settings.virtUser}`);
  if (conf.group !== undefined && conf.group.replace(/^\+/, '') !== settings.virtGroup) diffs.push(`group "${conf.group}" but VIRTGROUP=${settings.virtGroup}`);
  if (diffs.length > 0) log.warn(`${path} has ${diffs.join(', and ')}: keep these in sync with what qemu uses`);
}
