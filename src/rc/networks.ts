// Stopping libvirt's active networks before libvirtd goes (the original's
// `net-destroy` loop), through the libvirt driver (every virsh call has a deadline).
// `stop` lists them while its guests are being saved, and stops them after.
import type { Settings } from '../config/settings.js';
import { createLibvirtDriver, type LibvirtDriver } from '../domain/libvirt/driver.js';
import { errorMessage } from '../util/error-message.js';
import type { Log } from '../util/log.js';

const VIRSH_CALL_MS = 15_000;

/** The active networks of each qemu URI, or why they could not be listed. */
export type NetworkListing = { uri: string; names: string[] } | { uri: string; error: string };

/** The active networks of every qemu URI; never rejects (a URI that cannot be listed carries its error). */
export function listActiveNetworks(settings: Settings, log: Log, signal: AbortSignal): Promise<NetworkListing[]> {
  return Promise.all(qemuUris(settings).map((uri) => withDriver(settings, uri, log, async (driver): Promise<NetworkListing> => {
    try {
      return { uri, names: await driver.listActiveNetworks({ signal }) };
    } catch (err) {
      return { uri, error: errorMessage(err) };
    }
  })));
}

/**
 * `net-destroy` every network `listed` names (listed now when not given);
 * failures are warnings (libvirtd stops anyway). Returns how many were stopped.
 */
export async function destroyActiveNetworks(settings: Settings, log: Log, signal: AbortSignal, listed?: Promise<NetworkListing[]>): Promise<number> {
  let stopped = 0;
  for (const l of await (listed ?? listActiveNetworks(settings, log, signal))) {
    if ('error' in l) {
      log.warn(`cannot list the active networks of ${l.uri}: ${l.error}`);
      continue;
    }
    if (l.names.length === 0) continue;
    await withDriver(settings, l.uri, log, async (driver) => {
      for (const name of l.names) {
        try {
          await driver.destroyNetwork(name, { signal });
          stopped += 1;
          log.info(`network ${name} stopped`);
        } catch (err) {
          log.warn(`network ${name}: ${errorMessage(err)}`);
        }
      }
    });
  }
  return stopped;
}

function qemuUris(settings: Settings): string[] {
  return settings.uris.filter((uri) => uri.startsWith('qemu:'));
}

async function withDriver<T>(settings: Settings, uri: string, log: Log, use: (driver: LibvirtDriver) => Promise<T>): Promise<T> {
  const driver = createLibvirtDriver({ uri, virsh: settings.virsh, callTimeoutMs: VIRSH_CALL_MS, log });
  try {
    return await use(driver);
  } finally {
    await driver.close();
  }
}
