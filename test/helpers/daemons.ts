// virtlockd, virtlogd and libvirtd for one integration test file, started
// like the Slackware script does (-d -f CONF -p PIDFILE), stopped by PID, and
// an exclusive host-wide lock so test files of several developers that use
// the one libvirtd of this host run one after another.
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import {
  findPidsByComm,
  findProgram,
  identifyPid,
  isSameProcessAlive,
  runCommand,
  terminateProcess,
  waitFor,
  type ProcessIdentity,
} from './process.js';
import { runVirsh } from './virsh.js';

// The lock file test files hold (flock(2)) while they use libvirtd.
export const LOCK_PATH = '/run/rc-libvirt-test.lock';

/** One of the three daemons. */
export type DaemonName = 'virtlockd' | 'virtlogd' | 'libvirtd';

// Start order; they stop in reverse.
const DAEMONS: readonly DaemonName[] = ['virtlockd', 'virtlogd', 'libvirtd'];

/** Options of startLibvirtDaemons. */
export interface StartDaemonsOptions {
  // How long to wait for another test run's lock; default 20 min.
  lockTimeoutMs?: number;
  // How long a daemon may take to come up; default 60 s.
  startTimeoutMs?: number;
}

/** What startLibvirtDaemons did. */
export interface LibvirtDaemons {
  // The daemons this run started (and stopLibvirtDaemons will stop), with PIDs.
  started: { name: DaemonName; pid: number }[];
  // The daemons that were already running and are left alone.
  reused: { name: DaemonName; pid: number }[];
}

let lockFd: number | undefined;
let started: { name: DaemonName; id: ProcessIdentity }[] = [];

// The daemon's config and pid file, as in rc.libvirt.
function daemonArgs(name: DaemonName): string[] {
  const args = ['-d'];
  if (name === 'libvirtd') args.push('-l');
  args.push('-f', `/etc/libvirt/${name}.conf`, '-p', `/run/libvirt/${name}.pid`);
  return args;
}

// Runs `flock ARGS 3` on our open lock file; resolves with flock's exit code.
function runFlock(fd: number, args: readonly string[]): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', [...args, '3'], { stdio: ['ignore', 'ignore', 'pipe', fd] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code));
  });
}

/** What the lock file says while a test run holds it (JSON), read by the next holder. */
interface LockRecord {
  pid: number;
  since: string;
  cwd: string;
  // The daemons the holder started and has not stopped yet.
  daemons: { name: DaemonName; pid: number; startTime: string }[];
}

// Reads the lock file's record, or undefined when it is empty or not ours.
function readLockRecord(): LockRecord | undefined {
  try {
    const rec = JSON.parse(readFileSync(LOCK_PATH, 'utf8')) as Partial<LockRecord>;
    if (typeof rec.pid !== 'number' || !Array.isArray(rec.daemons)) return undefined;
    return rec as LockRecord;
  } catch {
    return undefined;
  }
}

// Rewrites the lock file with our PID and the daemons we have started.
function writeLockRecord(since: string): void {
  if (lockFd === undefined) return;
  const rec: LockRecord = {
    pid: process.pid,
    since,
    cwd: process.cwd(),
    daemons: started.map(({ name, id }) => ({ name, pid: id.pid, startTime: id.startTime })),
  };
  ftruncateSync(lockFd, 0);
  writeSync(lockFd, `${JSON.stringify(rec)}\n`);
}

let lockSince = '';

// Takes the host-wide test lock (waits up to timeoutMs). The lock belongs to our open file description, so it is released when we close it or when this process dies; daemons a dead holder left running are adopted (we stop them).
async function acquireLock(timeoutMs: number): Promise<void> {
  if (lockFd !== undefined) return;
  const fd = openSync(LOCK_PATH, 'a+');
  try {
    if ((await runFlock(fd, ['--exclusive', '--nonblock'])) !== 0) {
      const holder = readLockRecord();
      const who = holder ? `pid ${holder.pid} since ${holder.since} in ${holder.cwd}` : 'another test run';
      console.warn(`waiting up to ${Math.round(timeoutMs / 1000)} s for ${LOCK_PATH}, held by ${who}`);
      const code = await runFlock(fd, ['--exclusive', '--wait', String(Math.ceil(timeoutMs / 1000))]);
      if (code !== 0) {
        throw new Error(`${who} has held ${LOCK_PATH} for over ${Math.round(timeoutMs / 1000)} s; is a test stuck?`);
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  lockFd = fd;
  lockSince = new Date().toISOString();
  // A holder that released the lock emptied the file; a record left means it died holding it.
  for (const d of readLockRecord()?.daemons ?? []) {
    const id = { pid: d.pid, startTime: d.startTime };
    if (isSameProcessAlive(id)) {
      console.warn(`adopting ${d.name} (PID ${d.pid}), left running by a test run that died`);
      started.push({ name: d.name, id });
    }
  }
  writeLockRecord(lockSince);
}

// Releases the host-wide test lock if we hold it.
function releaseLock(): void {
  if (lockFd === undefined) return;
  try {
    ftruncateSync(lockFd, 0);
  } catch {
    // best effort
  }
  closeSync(lockFd);
  lockFd = undefined;
}

// Starts one daemon (unless one runs already) and returns its PID and whether we started it.
async function startDaemon(name: DaemonName, timeoutMs: number): Promise<{ pid: number; ours: boolean }> {
  const adopted = started.find((d) => d.name === name && isSameProcessAlive(d.id));
  if (adopted) return { pid: adopted.id.pid, ours: true };
  const running = findPidsByComm(name);
  if (running.length > 0) return { pid: running[0] ?? -1, ours: false };
  const program = findProgram(name);
  if (!program) throw new Error(`${name} is not installed; run: node testbed/setup.mjs`);
  const r = await runCommand(program, daemonArgs(name), { timeoutMs });
  if (r.code !== 0) {
    throw new Error(`${program} ${daemonArgs(name).join(' ')} failed (${r.code ?? r.signal}): ${r.stderr.trim()}; see /var/log/libvirt/`);
  }
  const pidfile = `/run/libvirt/${name}.pid`;
  const id = await waitFor(`${name} to write a live PID to ${pidfile}`, () => {
    let pid: number;
    try {
      pid = Number.parseInt(readFileSync(pidfile, 'utf8'), 10);
    } catch {
      return undefined;
    }
    return Number.isInteger(pid) && pid > 0 ? identifyPid(pid) : undefined;
  }, { timeoutMs, intervalMs: 50 });
  started.push({ name, id });
  writeLockRecord(lockSince);
  return { pid: id.pid, ours: true };
}

// Takes the host-wide test lock, then starts virtlockd, virtlogd and libvirtd (reusing any that run already) and waits until `virsh version` answers.
export async function startLibvirtDaemons(opts: StartDaemonsOptions = {}): Promise<LibvirtDaemons> {
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  await acquireLock(opts.lockTimeoutMs ?? 20 * 60_000);
  const result: LibvirtDaemons = { started: [], reused: [] };
  try {
    mkdirSync('/run/libvirt', { recursive: true });
    mkdirSync('/var/log/libvirt', { recursive: true });
    for (const name of DAEMONS) {
      const { pid, ours } = await startDaemon(name, startTimeoutMs);
      (ours ? result.started : result.reused).push({ name, pid });
    }
    let last = '';
    await waitFor('libvirtd to answer `virsh version`', async () => {
      const r = await runVirsh(['version'], { timeoutMs: 10_000 });
      last = r.stderr.trim();
      return r.code === 0;
    }, { timeoutMs: startTimeoutMs, intervalMs: 200 }).catch((err: Error) => {
      throw new Error(`${err.message} (last error: ${last}); see /var/log/libvirt/libvirtd.log`, { cause: err });
    });
  } catch (err) {
    await stopLibvirtDaemons();
    throw err;
  }
  return result;
}

// Stops the daemons startLibvirtDaemons started (libvirtd first; by PID: SIGTERM, wait, SIGKILL) and releases the lock; leaves reused daemons running.
export async function stopLibvirtDaemons(): Promise<void> {
  const ours = started.reverse();
  started = [];
  try {
    for (const { id } of ours) await terminateProcess(id, 20_000);
  } finally {
    releaseLock();
  }
}

// Takes only the host-wide lock, for test files that start and stop the daemons themselves (through rc.libvirt); waits up to timeoutMs (default 20 min). Daemons a dead holder left running are stopped first.
export async function holdLibvirtLock(timeoutMs = 20 * 60_000): Promise<void> {
  await acquireLock(timeoutMs);
  const left = started.reverse();
  started = [];
  for (const { id } of left) await terminateProcess(id, 20_000);
  writeLockRecord(lockSince);
}

// Records in the lock file the daemons a holdLibvirtLock test file started, so that if it dies the next holder stops them.
export function recordTestDaemons(daemons: readonly { name: DaemonName; id: ProcessIdentity }[]): void {
  started = daemons.map((d) => ({ name: d.name, id: d.id }));
  writeLockRecord(lockSince);
}

// Releases the lock holdLibvirtLock took (the caller has stopped its daemons).
export function releaseLibvirtLock(): void {
  started = [];
  releaseLock();
}
