// virsh for the integration tests: qemu:///system, LC_ALL=C (its output is
// parsed), an argv array and a timeout on every call.
import { describeFailure, runCommand, type CommandResult } from './process.js';

// The connection every helper and test uses.
export const LIBVIRT_URI = 'qemu:///system';

// Runs `virsh -c qemu:///system ARGS` with a timeout (default 60 s); a failure is data, not an exception.
export function runVirsh(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
  return runCommand('virsh', ['-c', LIBVIRT_URI, ...args], {
    timeoutMs: opts.timeoutMs ?? 60_000,
    env: { ...process.env, LC_ALL: 'C' },
  });
}

// Runs virsh like runVirsh and throws unless it exits 0; returns stdout.
export async function virsh(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await runVirsh(args, opts);
  if (r.code !== 0) throw new Error(describeFailure(r));
  return r.stdout;
}

// A domain's state as `virsh domstate` prints it ('running', 'shut off', ...), or undefined when virsh fails (e.g. no such domain).
export async function domainState(domain: string, opts: { timeoutMs?: number } = {}): Promise<string | undefined> {
  const r = await runVirsh(['domstate', `--domain=${domain}`], { timeoutMs: opts.timeoutMs ?? 20_000 });
  return r.code === 0 ? r.stdout.trim() : undefined;
}
