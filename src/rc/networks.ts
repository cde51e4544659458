// Stopping libvirt's active networks before libvirtd goes (the original's
// `net-destroy` loop), each virsh call with a deadline. Names go in argv, never through a shell.
import type { Settings } from '../config/settings.js';
import type { Log } from '../report/log.js';
import { describeRun, runProcess } from '../util/run.js';

const VIRSH_CALL_MS = 15_000;

function virsh(settings: Settings, uri: string, args: string[], signal: AbortSignal) {
  return runProcess([settings.virsh, '-c', uri, ...args], { timeoutMs: VIRSH_CALL_MS, signal, env: { ...process.env, LC_ALL: 'C' } });
}

/** `net-destroy` every active network on each URI; failures are warnings (libvirtd stops anyway). Returns how many were stopped. */
export async function destroyActiveNetworks(settings: Settings, log: Log, signal: AbortSignal): Promise<number> {
  let stopped = 0;
  for (const uri of settings.uris) {
    if (!uri.startsWith('qemu:')) continue;
    const list = await virsh(settings, uri, ['net-list', '--name'], signal);
    if (list.exitCode !== 0) {
      log.warn(`cannot list the active networks of ${uri}: ${describeRun(list)}`);
      continue;
    }
    for (const name of list.stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const r = await virsh(settings, uri, ['net-destroy', '--network', name], signal);
      if (r.exitCode === 0) {
        stopped += 1;
        log.info(`network ${name} stopped`);
      } else {
        log.warn(`network ${name}: ${describeRun(r)}`);
      }
    }
  }
  return stopped;
}
