// Stopping libvirt's active networks before libvirtd goes (the original's
// `net-destroy` loop), through the libvirt driver (every virsh call has a deadline).
import type { Settings } from '../config/settings.js';
import { createLibvirtDriver } from '../domain/libvirt/driver.js';
import type { Log } from '../util/log.js';

const VIRSH_CALL_MS = 15_000;

/** `net-destroy` every active network on each qemu URI; failures are warnings (libvirtd stops anyway). Returns how many were stopped. */
export async function destroyActiveNetworks(settings: Settings, log: Log, signal: AbortSignal): Promise<number> {
  let stopped = 0;
  for (const uri of settings.uris) {
    if (!uri.startsWith('qemu:')) continue;
    const driver = createLibvirtDriver({ uri, virsh: settings.virsh, callTimeoutMs: VIRSH_CALL_MS, log });
    try {
      let names: string[];
      try {
        names = await driver.listActiveNetworks({ signal });
      } catch (err) {
        log.warn(`cannot list the active networks of ${uri}: ${(err as Error).message}`);
        continue;
      }
      for (const name of names) {
        try {
          await driver.destroyNetwork(name, { signal });
          stopped += 1;
          log.info(`network ${name} stopped`);
        } catch (err) {
          log.warn(`network ${name}: ${(err as Error).message}`);
        }
      }
    } finally {
      await driver.close();
    }
  }
  return stopped;
}
