// The drivers a run acts through, from the settings: one libvirt driver per
// URI (URIS), or the qmp driver (QEMU directly, guests in QEMU_GUESTS_DIR).
import { join } from 'node:path';
import { DEFAULTS, type Settings } from '../config/settings.js';
import type { DomainDriver } from '../domain/types.js';
import { createLibvirtDriver } from '../domain/libvirt/driver.js';
import { hintDirsFor } from '../domain/libvirt/guest-hints.js';
import { createQmpDriver } from '../domain/qmp/qmp-driver.js';
import type { Log } from '../util/log.js';

/** The qmp driver's runtime directory (QMP sockets, pidfiles) under RC_LIBVIRT_RUN_DIR. */
export function qmpRunDir(settings: Pick<Settings, 'runDir'>): string {
  return join(settings.runDir, 'qmp');
}

/**
 * Open the drivers the settings name. With `everyDriver` (DRIVER or URIS was
 * bad at a command that runs at host shutdown) all of them: libvirt at the
 * URIS given and at libvirt's default URI (qemu:///system), and the qmp driver,
 * which finds the QEMUs running from its runtime directory and the guests
 * defined in QEMU_GUESTS_DIR. A guest is under one of them only, so none is
 * handled twice.
 */
export async function openDrivers(settings: Settings, _signal: AbortSignal, log?: Log): Promise<DomainDriver[]> {
  const withLog = log ? { log } : {};
  const qmp = (): DomainDriver => createQmpDriver({ guestsDir: settings.guestsDir, runDir: qmpRunDir(settings), saveDir: settings.qemuSaveDir, ...withLog });
  const libvirt = (uris: readonly string[]): DomainDriver[] => uris.map((uri) => createLibvirtDriver({ uri, virsh: settings.virsh, hintDirs: hintDirsFor(uri), ...withLog }));
  if (settings.everyDriver) return [...libvirt(libvirtUris(settings)), qmp()];
  if (settings.driver === 'qmp') return [qmp()];
  return libvirt(settings.uris);
}

/** The libvirt URIs a run acts on: URIS, and with `everyDriver` libvirt's default URI too. */
export function libvirtUris(settings: Pick<Settings, 'uris' | 'everyDriver'>): string[] {
  return settings.everyDriver ? [...new Set([...settings.uris, ...DEFAULTS.uris])] : [...settings.uris];
}

/** Close every driver, never throwing. */
export async function closeDrivers(drivers: readonly DomainDriver[]): Promise<void> {
  await Promise.all(drivers.map((d) => d.close().catch(() => undefined)));
}
