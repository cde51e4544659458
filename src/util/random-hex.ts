// Random hex for file names (temp files, files moved aside) and the libvirt
// listing's markers, read from the kernel's /dev/urandom with the fs calls
// the program has loaded anyway: loading node:crypto costs some 7 ms of a
// run's start (seventeen modules of Node.js), before the listing's first
// virsh. Where /dev/urandom cannot be read, node:crypto is loaded then. It is
// required, not imported: a dynamic import() would start Node's ES module
// loader as well.
import { closeSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';

// import.meta.url in an ES module (tests); __filename where the code is bundled as CommonJS without it.
const load = createRequire((import.meta.url as string | undefined) ?? __filename);

/** The kernel's random source. */
export const URANDOM = '/dev/urandom';

/** `bytes` bytes from `source` (a character device such as URANDOM), or undefined when it cannot give them all. */
export function readRandom(bytes: number, source = URANDOM): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(source, 'r');
    const buf = Buffer.alloc(bytes);
    let got = 0;
    while (got < bytes) {
      const n = readSync(fd, buf, got, bytes - got, null);
      if (n === 0) return undefined;
      got += n;
    }
    return buf;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** `bytes` random bytes as hex. */
export function randomHex(bytes: number): string {
  const buf = readRandom(bytes) ?? (load('node:crypto') as typeof import('node:crypto')).randomBytes(bytes);
  return buf.toString('hex');
}
