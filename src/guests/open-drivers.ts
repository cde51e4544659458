// The drivers a run acts through, from the settings: one libvirt driver per
// URI (URIS), or the qmp driver (QEMU directly, guests in QEMU_GUESTS_DIR).
import type { Settings } from '../config/settings.js';
import type { DomainDriver } from '../domain/types.js';
import { createLibvirtDriver } from '../domain/libvirt/driver.js';
import type { Log } from '../report/log.js';

/** Open the drivers the settings name. */
export async function openDrivers(settings: Settings, _signal: AbortSignal, log?: Log): Promise<DomainDriver[]> {
  if (settings.driver === 'libvirt') {
    return settings.uris.map((uri) => createLibvirtDriver({ uri, virsh: settings.virsh, ...(log ? { log } : {}) }));
  }
  throw new Error(`the ${settings.driver} driver is not built into this version yet`);
}

/** Close every driver, never throwing. */
export async function closeDrivers(drivers: readonly DomainDriver[]): Promise<void> {
  await Promise.all(drivers.map((d) => d.close().catch(() => undefined)));
}
