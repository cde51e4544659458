// Kernel modules: MODULES plus the KVM modules the CPU supports, loaded at
// start and unloaded at stop when no one uses them. Failures are warnings:
// libvirt runs without them (slower, or without tun networking).
import { readFile } from 'node:fs/promises';
import type { Log } from '../util/log.js';
import { describeRun, runProcess } from '../util/run.js';

/** The KVM modules for a CPU, from /proc/cpuinfo's flags (`vmx`: Intel, `svm`: AMD), kvm first (unloading goes in reverse); empty without KVM support. */
export function kvmModules(cpuinfo: string): string[] {
  const flags = new Set(
    cpuinfo
      .split('\n')
      .filter((l) => /^flags\s*:/.test(l))
      .flatMap((l) => l.slice(l.indexOf(':') + 1).trim().split(/\s+/)),
  );
  if (flags.has('vmx')) return ['kvm', 'kvm_intel'];
  if (flags.has('svm')) return ['kvm', 'kvm_amd'];
  return [];
}

/** Loaded modules and their use counts, from /proc/modules' text. */
export function parseProcModules(text: string): Map<string, number> {
  const used = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [name, , refs] = line.split(/\s+/);
    if (name && refs !== undefined && /^\d+$/.test(refs)) used.set(name, Number(refs));
  }
  return used;
}

/** What module operations run with. */
export interface ModuleContext {
  log: Log;
  signal: AbortSignal;
  modprobe?: string;
}

/** The modules start loads: MODULES, then the KVM ones (a one-line notice when the CPU has no KVM). */
export async function modulesToLoad(modules: readonly string[], log: Log): Promise<string[]> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const kvm = kvmModules(cpuinfo);
  if (kvm.length === 0) log.notice('this CPU offers no KVM (no vmx/svm flag): guests run without hardware acceleration');
  return [...new Set([...modules, ...kvm])];
}

/** `modprobe -a` the modules; a failure is a warning. */
export async function loadModules(modules: readonly string[], ctx: ModuleContext): Promise<void> {
  if (modules.length === 0) return;
  const r = await runProcess([ctx.modprobe ?? 'modprobe', '-a', ...modules], { timeoutMs: 30_000, signal: ctx.signal });
  if (r.exitCode === 0) ctx.log.info(`modules loaded: ${modules.join(' ')}`);
  else ctx.log.warn(`could not load the modules ${modules.join(' ')}: ${describeRun(r)}`);
}

/** `modprobe -r` each module that is loaded and unused, in reverse order; the rest is a notice. */
export async function unloadModules(modules: readonly string[], ctx: ModuleContext): Promise<void> {
  if (modules.length === 0) return;
  // Read /proc/modules before each one: unloading kvm_intel frees kvm.
  for (const m of [...modules].reverse()) {
    let text: string;
    try {
      text = await readFile('/proc/modules', 'utf8');
    } catch {
      ctx.log.notice('no /proc/modules: cannot tell which modules are in use, none unloaded');
      return;
    }
    const refs = parseProcModules(text).get(m.replace(/-/g, '_'));
    if (refs === undefined) continue;
    if (refs > 0) {
      ctx.log.notice(`module ${m} stays loaded: in use (${refs})`);
      continue;
    }
    const r = await runProcess([ctx.modprobe ?? 'modprobe', '-r', m], { timeoutMs: 30_000, signal: ctx.signal });
    if (r.exitCode === 0) ctx.log.info(`module ${m} unloaded`);
    else ctx.log.notice(`module ${m} not unloaded: ${describeRun(r)}`);
  }
}
