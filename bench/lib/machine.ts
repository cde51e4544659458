// The machine and the versions a benchmark ran on, for the report.
import { cpus, loadavg, totalmem } from 'node:os';
import { $ } from 'zx';
import { repoRoot } from '../../test/helpers/testbed.js';

// The report's facts come from commands whose failure only makes a fact 'unknown'.
const ask = $({ nothrow: true, quiet: true, timeout: '20s' });

/** What the report says about where it ran. */
export interface MachineInfo {
  date: string;
  cores: number;
  memoryMiB: number;
  cpuModel: string;
  /** 1-minute load average when the run began (others share this machine). */
  loadAtStart: number;
  kernel: string;
  node: string;
  qemu: string;
  libvirt: string;
  /** The commit of this checkout the run measured (`+dirty` with uncommitted changes). */
  commit?: string;
}

// The first line of a program's output, or 'not installed'.
async function firstLine(file: string, args: string[]): Promise<string> {
  const r = await ask`${file} ${args}`;
  if (r.exitCode === 127) return 'not installed';
  return (r.stdout || r.stderr).split('\n')[0]?.trim() || 'unknown';
}

// Collects machine facts and program versions.
export async function machineInfo(): Promise<MachineInfo> {
  const qemu = await firstLine('qemu-system-x86_64', ['--version']);
  const libvirt = await firstLine('libvirtd', ['--version']);
  const kernel = await firstLine('uname', ['-sr']);
  const head = await firstLine('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = await ask`git -C ${repoRoot} status --porcelain --untracked-files=no`;
  return {
    date: new Date().toISOString(),
    cores: cpus().length,
    memoryMiB: Math.round(totalmem() / 1048576),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    loadAtStart: Math.round((loadavg()[0] ?? 0) * 100) / 100,
    kernel,
    node: process.version,
    qemu: qemu.replace(/^QEMU emulator version /, ''),
    libvirt: libvirt.replace(/^libvirtd \(libvirt\) /, ''),
    commit: `${head}${dirty.stdout.trim() ? '+dirty' : ''}`,
  };
}
