// A QMP-driver guest's QEMU process: its runtime files, launching it
// daemonized, and finding out whether the pidfile's pid is still that QEMU
// (alive, not a zombie, its command line naming our QMP socket).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeRun, runProcess } from '../../util/run.js';
import { hasEnded, readProcess } from '../../proc/identity.js';
import { signalIfOurs } from '../../proc/stop.js';
import { OperationRefusedError } from '../errors.js';
import { abortError } from '../../qmp/abort.js';
import { withFsDeadline } from './fs-deadline.js';
import { isOwnRegularFile, removeStale } from './private-dir.js';

/** The files of one guest under the runtime directory. */
export interface GuestRuntimePaths {
  qmp: string;
  pidfile: string;
  /** The socket QEMU migrates into on save (we listen). */
  saveSocket: string;
  /** The socket QEMU listens on for an incoming migration on restore. */
  incomingSocket: string;
}

/** sun_path holds 108 bytes with the NUL. */
const MAX_SOCKET_PATH = 107;

/** The runtime paths of guest `name` under `runDir`. */
export function runtimePaths(runDir: string, name: string): GuestRuntimePaths {
  return {
    qmp: join(runDir, `${name}.qmp`),
    pidfile: join(runDir, `${name}.pid`),
    saveSocket: join(runDir, `${name}.save.sock`),
    incomingSocket: join(runDir, `${name}.in.sock`),
  };
}

/** A value inside one of QEMU's `key=value,...` options: a comma is written twice. */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** The `-qmp` option naming the guest's QMP socket; every key is explicit, so `=` and `,` in the path are taken literally. */
export function qmpOption(qmpPath: string): string {
  return `unix:path=${qemuOptValue(qmpPath)},server=on,wait=off`;
}

/**
 * The argv QEMU is launched with: the definition's, plus name, QMP socket, pidfile, daemonize (and -incoming defer -S to restore).
 * The name goes in as `guest=NAME` (QEMU 7.2: `-name [guest=]NAME[,process=...]`), so a name with `=` or `,` is not read as a parameter.
 */
export function launchArgv(argv: readonly string[], name: string, paths: GuestRuntimePaths, opts: { incoming?: boolean; paused?: boolean } = {}): string[] {
  const out = [...argv, '-name', `guest=${qemuOptValue(name)}`, '-qmp', qmpOption(paths.qmp), '-pidfile', paths.pidfile, '-daemonize'];
  if (opts.incoming) out.push('-incoming', 'defer');
  if (opts.incoming || opts.paused) out.push('-S');
  return out;
}

/** What the pidfile says and whether that process is our QEMU. */
export interface ProcessCheck {
  pid: number | undefined;
  alive: boolean;
  /** Why it is not considered running (no pidfile, bad pidfile, gone, another process). */
  detail: string;
}

/** Check the pidfile's pid: alive, not a zombie, and its command line names our QMP socket (within FS_CALL_MS: a TimedOutError when the file system hangs). */
export function checkProcess(paths: GuestRuntimePaths): Promise<ProcessCheck> {
  return withFsDeadline(checkProcessNow(paths), `checking ${paths.pidfile}`);
}

async function checkProcessNow(paths: GuestRuntimePaths): Promise<ProcessCheck> {
  if (!(await isOwnRegularFile(paths.pidfile))) return { pid: undefined, alive: false, detail: 'no pidfile' };
  const text = (await readFile(paths.pidfile, 'utf8').catch(() => '')).trim();
  if (!/^\d+$/.test(text) || Number(text) < 2) {
    return { pid: undefined, alive: false, detail: `bad pidfile ${paths.pidfile}: ${JSON.stringify(text.slice(0, 40))}` };
  }
  const pid = Number(text);
  return { pid, ...(await checkPid(pid, paths.qmp)) };
}

/** Whether `pid` is alive (not a zombie) and its command line names `qmpPath` (as `launchArgv` writes it, or in the earlier form `unix:PATH,server=on,wait=off` of QEMUs launched before an upgrade). */
export async function checkPid(pid: number, qmpPath: string): Promise<{ alive: boolean; detail: string }> {
  const info = await readProcess(pid);
  if (!info || info.argv === undefined) return { alive: false, detail: `process ${pid} is gone` };
  if (hasEnded(info.stat)) return { alive: false, detail: `process ${pid} has exited` };
  const forms = [qmpOption(qmpPath), `unix:${qmpPath},server=on,wait=off`];
  if (!info.argv.some((arg) => forms.includes(arg))) {
    return { alive: false, detail: `process ${pid} is not this guest's QEMU (stale pidfile)` };
  }
  return { alive: true, detail: `process ${pid}` };
}

/** Launch QEMU daemonized; resolves with its pid once the pidfile names it. */
export async function launchQemu(argv: readonly string[], name: string, paths: GuestRuntimePaths, opts: { signal: AbortSignal; timeoutMs: number; incoming?: boolean; paused?: boolean }): Promise<number> {
  for (const p of [paths.qmp, paths.incomingSocket, paths.saveSocket]) {
    if (p.length > MAX_SOCKET_PATH) throw new OperationRefusedError(`${p}: socket path longer than ${MAX_SOCKET_PATH} bytes; use a shorter guest name or runtime directory`, { guest: name });
  }
  await removeStale(paths.pidfile);
  await removeStale(paths.qmp);
  const full = launchArgv(argv, name, paths, opts);
  const r = await runProcess(full, { timeoutMs: opts.timeoutMs, signal: opts.signal });
  if (r.aborted || r.exitCode !== 0) {
    // A daemonized child leaves the process group runProcess kills: end it by its checked pid.
    const orphan = await checkProcess(paths).catch(() => undefined);
    if (orphan?.alive && orphan.pid !== undefined) await signalQemu(orphan.pid, paths.qmp, 'SIGKILL');
    if (r.aborted) throw abortError(opts.signal, `launching ${name}`, name);
    throw new OperationRefusedError(`cannot start ${name}: ${describeRun(r)}`, { guest: name });
  }
  const check = await checkProcess(paths);
  if (!check.alive || check.pid === undefined) throw new OperationRefusedError(`started ${name}, but it is not running: ${check.detail}`, { guest: name });
  return check.pid;
}

/** Whether `pid` is still our QEMU (alive, its command line names `qmpPath`). */
export async function isOurQemu(pid: number, qmpPath: string): Promise<boolean> {
  return (await checkPid(pid, qmpPath)).alive;
}

/** Send `sig` to `pid`, only when it is still our QEMU; false when it was not (or is gone). */
export async function signalQemu(pid: number, qmpPath: string, sig: NodeJS.Signals): Promise<boolean> {
  return signalIfOurs(pid, sig, () => isOurQemu(pid, qmpPath));
}
