// Which guests a libvirt listing will likely find, read from libvirt's own
// XML files without asking libvirtd: the status files of the running guests
// (/run/libvirt/qemu) and the definitions of the persistent ones
// (/etc/libvirt/qemu), for qemu:///system. Only a hint: the listing still asks
// libvirtd which guests there are (`list --all --uuid`), and describes the
// hinted ones in the same virsh process (docs/libvirt-driver.md, "One virsh
// for the listing"), so a wrong or missing hint costs a few failed calls or
// one more process, never a guest. A folder or file that cannot be read is
// skipped in silence. Only regular files are read, without following a
// symlink or blocking on a FIFO, and at most MAX_HINT_FILE_BYTES of each.
import { closeSync, constants, fstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { isUuid } from './parse.js';
import { DEFAULT_STATUS_DIR } from './status-files.js';

/** Where qemu:///system keeps the definitions of its persistent guests. */
export const DEFAULT_CONFIG_DIR = '/etc/libvirt/qemu';

/** The folders hinted for a URI: libvirt's own for qemu:///system, none for any other. */
export function hintDirsFor(uri: string): string[] {
  return uri === 'qemu:///system' ? [DEFAULT_STATUS_DIR, DEFAULT_CONFIG_DIR] : [];
}

/** How much of one file is read: a status file with QEMU's capabilities is some 100 KiB. */
export const MAX_HINT_FILE_BYTES = 1 << 20;

/** How many files are read at most (a folder of thousands is not a libvirt folder). */
export const MAX_HINT_FILES = 4096;

/** The first `<uuid>` inside `<domain`: a definition's, or the guest's inside a `<domstatus>`. */
const DOMAIN_UUID = /<domain[\s>][\s\S]*?<uuid>\s*([0-9A-Fa-f-]{36})\s*<\/uuid>/;

/**
 * The UUIDs (lower case, each once) of the guests the `*.xml` files of `dirs`
 * describe. Read at once, without yielding (a few small local files): the
 * listing's first virsh is spawned right after. Both libvirt folders name a
 * guest's file after the guest, so a file named as one that gave a UUID in
 * an earlier folder (the definition of a running guest, after its status
 * file) is not read.
 */
export function readGuestHints(dirs: readonly string[]): string[] {
  const files: [string, string][] = [];
  for (const dir of dirs) {
    try {
      for (const entry of readdirSync(dir).sort()) if (entry.endsWith('.xml')) files.push([dir, entry]);
    } catch {
      // not there, or not ours to read: no hint from it
    }
  }
  const ids = new Set<string>();
  const named = new Set<string>();
  for (const [dir, entry] of files.slice(0, MAX_HINT_FILES)) {
    if (named.has(entry)) continue;
    const id = uuidOfFile(join(dir, entry));
    if (id === undefined) continue;
    ids.add(id);
    named.add(entry);
  }
  return [...ids];
}

function uuidOfFile(file: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    const buf = Buffer.alloc(Math.min(st.size, MAX_HINT_FILE_BYTES));
    let size = 0;
    while (size < buf.length) {
      const n = readSync(fd, buf, size, buf.length - size, size);
      if (n === 0) break;
      size += n;
    }
    const id = DOMAIN_UUID.exec(buf.toString('utf8', 0, size))?.[1]?.toLowerCase();
    return id !== undefined && isUuid(id) ? id : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
