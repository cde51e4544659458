// Random hex for file names (temp files, files moved aside) and the libvirt
// listing's markers. node:crypto is loaded on the first call only: it is
// seventeen modules of Node.js, which --help, --version and the commands that
// list no libvirt guests never need. It is required, not imported: a dynamic
// import() would start Node's ES module loader as well.
import { createRequire } from 'node:module';

// import.meta.url in an ES module (tests); __filename where the code is bundled as CommonJS without it.
const load = createRequire((import.meta.url as string | undefined) ?? __filename);

/** `bytes` random bytes as hex. */
export function randomHex(bytes: number): string {
  const { randomBytes } = load('node:crypto') as typeof import('node:crypto');
  return randomBytes(bytes).toString('hex');
}
