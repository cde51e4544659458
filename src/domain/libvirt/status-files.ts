// libvirt's status files of running QEMU guests (`/run/libvirt/qemu/NAME.xml`):
// `<domstatus state= pid=>`, the monitor socket and the domain inside. The
// rescue path reads them when libvirtd does not answer. A damaged file is
// reported and skipped, never fatal.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../../util/error-message.js';
import { parseXmlDocument, readDomainFacts, type DomainXmlFacts } from './domain-xml.js';

/** Where libvirt's QEMU driver keeps the status of running guests (qemu:///system). */
export const DEFAULT_STATUS_DIR = '/run/libvirt/qemu';

/** A running guest as libvirt's status file records it. */
export interface StatusGuest {
  name: string;
  uuid: string;
  /** `<domstatus state=...>`: running, paused, shutdown... */
  state: string;
  /** The QEMU process. */
  pid: number;
  /** The QMP monitor socket. */
  monitorPath: string;
  statusFile: string;
  facts: DomainXmlFacts;
}

/** The guests in a status directory, and the files that could not be read (each with why). */
export async function readStatusFiles(dir: string = DEFAULT_STATUS_DIR): Promise<{ guests: StatusGuest[]; problems: string[] }> {
  const guests: StatusGuest[] = [];
  const problems: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { guests, problems };
    return { guests, problems: [`${dir}: cannot list: ${errorMessage(err)}`] };
  }
  for (const entry of entries.sort()) {
    if (!entry.endsWith('.xml')) continue;
    const file = join(dir, entry);
    try {
      guests.push(parseStatusFile(await readFile(file, 'utf8'), file));
    } catch (err) {
      problems.push(`${file}: skipped: ${errorMessage(err)}`);
    }
  }
  return { guests, problems };
}

/** Parse one status file; throws an Error naming the file and what is wrong. */
export function parseStatusFile(xml: string, file: string): StatusGuest {
  const doc = parseXmlDocument(xml, file);
  const st = doc.domstatus as Record<string, unknown> | undefined;
  if (!st || typeof st !== 'object') throw new Error(`${file}: no <domstatus> element`);
  const state = String(st['@state'] ?? '');
  if (!state) throw new Error(`${file}: <domstatus> has no state`);
  const pidText = String(st['@pid'] ?? '');
  if (!/^\d+$/.test(pidText) || Number(pidText) <= 1) throw new Error(`${file}: <domstatus pid="${pidText}"> is not a process id`);
  const monitor = st.monitor as Record<string, unknown> | undefined;
  const monitorPath = String(monitor?.['@path'] ?? '');
  if (!monitorPath.startsWith('/')) throw new Error(`${file}: no <monitor path=...> of a unix socket`);
  const dom = st.domain as Record<string, unknown> | undefined;
  if (!dom || typeof dom !== 'object') throw new Error(`${file}: no <domain> inside <domstatus>`);
  const facts = readDomainFacts(dom, file);
  if (!facts.name || !/^[0-9a-f-]{36}$/.test(facts.uuid)) throw new Error(`${file}: the domain has no name or UUID`);
  return { name: facts.name, uuid: facts.uuid, state, pid: Number(pidText), monitorPath, statusFile: file, facts };
}
