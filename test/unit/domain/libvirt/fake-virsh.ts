// A fake `virsh` for unit tests: a tiny shell script written to a temp folder
// that prints what a test wants and exits as it wants, for the output and
// error cases a real libvirtd cannot be made to produce.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fake virsh: its path, the folder to put on PATH, and cleanup. */
export interface FakeVirsh {
  path: string;
  dir: string;
  /** Every argv it was called with is appended here, one line each (args joined by NUL→'|'). */
  callsFile: string;
  remove(): void;
}

/** Write a fake `virsh` whose body is `script` (sh); it logs its arguments to callsFile first. */
export function writeFakeVirsh(script: string): FakeVirsh {
  const dir = mkdtempSync(join(tmpdir(), 'rcl-fake-virsh-'));
  const path = join(dir, 'virsh');
  const callsFile = join(dir, 'calls');
  writeFileSync(
    path,
    `#!/bin/sh\n(for a in "$@"; do printf '%s|' "$a"; done; printf ' LC_ALL=%s\\n' "$LC_ALL") >> '${callsFile}'\n${script}\n`,
  );
  chmodSync(path, 0o755);
  return { path, dir, callsFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
