// The directories the daemons and rc.libvirt need before they start, and the
// check the SlackBuild README asks for: VIRTUSER/VIRTGROUP, the account QEMU
// runs as, must match qemu.conf's `user`/`group`. rc.libvirt's own run, state
// and (qmp) save directories belong to root, mode 0700, whatever VIRTUSER is.
import { mkdir, readFile } from 'node:fs/promises';
import type { Settings } from '../config/settings.js';
import type { Log } from '../util/log.js';
import { errorMessage } from '../util/error-message.js';
import { ensureOwnDir } from '../util/own-dir.js';

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

/** rc.libvirt's own directories: run and state, and the save directory when the qmp driver runs. */
export function ownDirs(settings: Pick<Settings, 'runDir' | 'stateDir' | 'qemuSaveDir' | 'driver'>): string[] {
  return [settings.runDir, settings.stateDir, ...(settings.driver === 'qmp' ? [settings.qemuSaveDir] : [])];
}

/**
 * Make each of `dirs` root's, mode 0700 (created so, or fixed and said so); one that is a
 * symlink or not a directory is refused loudly and left alone. Returns the refused ones.
 */
export async function secureOwnDirs(dirs: readonly string[], log: Log): Promise<string[]> {
  const refused: string[] = [];
  for (const d of dirs) {
    try {
      const fixed = await ensureOwnDir(d);
      if (fixed) log.warn(fixed);
    } catch (err) {
      refused.push(d);
      log.error(errorMessage(err));
    }
  }
  return refused;
}

/** Create libvirt's runtime directories and rc.libvirt's own (root, mode 0700). */
export async function makeRuntimeDirs(settings: Settings, log: Log): Promise<void> {
  for (const d of LIBVIRT_RUNTIME_DIRS) await mkdir(d, { recursive: true, mode: 0o755 });
  await secureOwnDirs(ownDirs(settings), log);
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
