// Setup of every unit test file: the host's daemons and processes are out of
// reach. Starting the host's virsh, libvirtd, virtlogd, virtlockd, QEMU or
// modprobe throws (a stand-in in the temp directory, as the fake virsh is, and
// a name that resolves to no file are allowed),
// and so does process.kill of a pid this test file did not start: its own pid,
// the children it spawned (and their process groups) are allowed. The child
// process functions are wrapped in node:child_process itself, and the ES module
// bindings synced, so the code under test is held to it as well as the tests.
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';

const require = createRequire(import.meta.url);
const cp = require('node:child_process') as Record<string, (...args: unknown[]) => unknown>;

const HOST_PROGRAMS = /^(virsh|libvirtd|virtlogd|virtlockd|qemu-system-.*|qemu-kvm|modprobe|rmmod)$/;
const spawned = new Set<number>();

// The file a command name runs: itself when it has a slash, else the first on PATH; undefined when there is none.
function resolve(program: string, path: string): string | undefined {
  if (program.includes('/')) return existsSync(program) ? program : undefined;
  return path.split(':').map((d) => join(d || '.', program)).find((f) => existsSync(f));
}

function refuse(file: unknown, rest: unknown[]): void {
  if (typeof file !== 'string') return;
  const program = file.trim().split(/\s+/)[0] ?? '';
  if (!HOST_PROGRAMS.test(basename(program))) return;
  const opts = rest.find((r): r is { env?: NodeJS.ProcessEnv } => typeof r === 'object' && r !== null && !Array.isArray(r));
  const found = resolve(program, opts?.env?.PATH ?? process.env.PATH ?? '');
  if (found !== undefined && !found.startsWith(`${tmpdir()}/`)) {
    throw new Error(`a unit test must not run the host's ${found}: inject a fake (test/fakes) or a stand-in in the temp directory`);
  }
}

for (const name of ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec', 'execSync', 'fork']) {
  const real = cp[name];
  if (typeof real !== 'function') continue;
  cp[name] = function (this: unknown, file: unknown, ...rest: unknown[]): unknown {
    refuse(file, rest);
    const r = real.call(this, file, ...rest) as { pid?: unknown } | undefined;
    if (r && typeof r === 'object' && typeof r.pid === 'number') spawned.add(r.pid);
    return r;
  };
}
syncBuiltinESMExports();

const realKill = process.kill.bind(process);
process.kill = (pid: number, signal?: string | number): true => {
  const target = Math.abs(pid);
  if (target !== process.pid && !spawned.has(target)) {
    throw new Error(`a unit test must not signal pid ${pid} (${String(signal ?? 'SIGTERM')}): this test file did not start it`);
  }
  return realKill(pid, signal);
};
