// The run lock, with the real flock(1) and real processes on purpose: what is
// tested is how a flock(2) lock behaves between processes (held by another
// run, freed when its holder dies, kept by a holder's child), which a fake
// could only assert, not show. Everything stays the test's own: the lock files
// are in its temp directory, the processes it signals are its own children (a
// holder's whole process group), and the pids the lock files name are its own,
// its children's, one above the kernel's pid_max (999999999, "a crashed run"),
// or pid 1 with a start time not its own (a pid reused): the lock only reads
// /proc/PID/stat of a holder, it never signals one.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { exitCodeOfError } from '../../../src/cli/exit-codes.js';
import { NotInstalledError, RunLockError } from '../../../src/rc/errors.js';
import { acquireRunLock, FLOCK, lockPath, RUN_MARGIN_MS, runBoundMs } from '../../../src/rc/run-lock.js';
import { STOP_MARGIN_MS } from '../../../src/guests/ladder.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const signal = new AbortController().signal;

// Holds the lock as another run would: flock(1) on the file, running `sleep`.
// It runs in a process group of its own, ended as a whole (the lock is shared
// with flock's child).
interface OtherHolder {
  end(): void;
}
const others: ChildProcess[] = [];
async function otherHolder(path: string, line: string): Promise<OtherHolder> {
  writeFileSync(path, line);
  const child = spawn(FLOCK, ['--exclusive', path, 'sleep', '600'], { stdio: 'ignore', detached: true });
  others.push(child);
  await new Promise((r) => setTimeout(r, 200));
  expect(isFree(path)).toBe(false);
  return { end: () => endGroup(child) };
}
function endGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
afterAll(() => {
  for (const c of others) endGroup(c);
});

// Whether nobody holds the lock: flock --nonblock gets it at once.
function isFree(path: string): boolean {
  return spawnSync(FLOCK, ['--exclusive', '--nonblock', path, 'true']).status === 0;
}

describe('run lock', () => {
  it('writes the holder; release frees the lock and clears the holder', async () => {
    const lock = await acquireRunLock({ runDir: dir, command: 'start', signal });
    expect(readFileSync(lockPath(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+ start -\\n$`));
    expect(isFree(lockPath(dir))).toBe(false);
    await lock.release();
    expect(readFileSync(lockPath(dir), 'utf8')).toBe('');
    expect(isFree(lockPath(dir))).toBe(true);
  });

  it('refuses a second take in the same process', async () => {
    const lock = await acquireRunLock({ runDir: dir, command: 'start', signal });
    try {
      const err = await acquireRunLock({ runDir: dir, command: 'stop', signal, waitMs: 0 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RunLockError);
      expect((err as Error).message).toContain('this process already holds the run lock');
    } finally {
      await lock.release();
    }
  });

  it('makes a second run wait, then give up naming the holder', async () => {
    const holder = await otherHolder(lockPath(dir), '1 ? stop\n'); // pid 1 is alive
    let waited: unknown = 'not called';
    const err = await acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 300, onWait: (h) => (waited = h) })
      .then(() => undefined, (e: unknown) => e);
    expect(waited).toEqual({ pid: 1, startTime: '?', command: 'stop' });
    expect(err).toBeInstanceOf(RunLockError);
    expect(exitCodeOfError(err)).toBe(1);
    expect((err as Error).message).toContain('pid 1');
    expect((err as Error).message).toContain('"stop"');
    holder.end();
  });

  it('takes the lock as soon as the other run ends', async () => {
    const holder = await otherHolder(lockPath(dir), '1 ? stop\n');
    let waited = false;
    const taking = acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 30_000, onWait: () => (waited = true) });
    await new Promise((r) => setTimeout(r, 300));
    holder.end();
    const lock = await taking;
    expect(waited).toBe(true);
    expect(readFileSync(lockPath(dir), 'utf8')).toContain(`${process.pid} `);
    await lock.release();
  });

  it('is not blocked by the line of a holder that is dead, or whose pid now belongs to another process', async () => {
    for (const line of ['999999999 12345 stop\n', '1 1 stop\n']) {
      writeFileSync(lockPath(dir), line);
      const lock = await acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 0 });
      expect(readFileSync(lockPath(dir), 'utf8')).toContain(`${process.pid} `);
      await lock.release();
    }
  });

  it('an interrupt ends the wait', async () => {
    const holder = await otherHolder(lockPath(dir), '1 ? stop\n');
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('SIGTERM received')), 200);
    const err = await acquireRunLock({ runDir: dir, command: 'start', signal: ac.signal, waitMs: 30_000 }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('SIGTERM received');
    holder.end();
  });

  it('names flock(1) when it is missing (exit 5)', async () => {
    const err = await acquireRunLock({ runDir: dir, command: 'start', signal, flock: join(dir, 'no-such-flock') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotInstalledError);
    expect(exitCodeOfError(err)).toBe(5);
    expect((err as Error).message).toContain('no-such-flock is missing');
  });

  it('never opens a lock file through a planted symlink: it is moved aside, the file it points to is untouched', async () => {
    const runDir = mkdtempSync(join(dir, 'sym-'));
    const decoy = join(dir, 'decoy');
    writeFileSync(decoy, 'precious\n');
    const before = statSync(decoy);
    symlinkSync(decoy, lockPath(runDir));
    const lock = await acquireRunLock({ runDir, command: 'guests_shutdown', signal });
    expect(lock.held).toBe(true);
    expect(lock.problems).toHaveLength(1);
    expect(lock.problems[0]).toContain(`was a symlink (to ${decoy})`);
    expect(lstatSync(lockPath(runDir)).isFile()).toBe(true);
    expect(lstatSync(lockPath(runDir)).mode & 0o777).toBe(0o600);
    const aside = readdirSync(runDir).filter((f) => f.startsWith('rc.libvirt.lock.unsafe-'));
    expect(aside).toHaveLength(1);
    expect(readlinkSync(join(runDir, aside[0]!))).toBe(decoy);
    await lock.release();
    expect(readFileSync(decoy, 'utf8')).toBe('precious\n');
    expect(statSync(decoy).mtimeMs).toBe(before.mtimeMs);
  });

  it('never writes a lock file that is a hard link of another file: it is moved aside', async () => {
    const runDir = mkdtempSync(join(dir, 'hard-'));
    const decoy = join(runDir, 'decoy');
    writeFileSync(decoy, 'precious\n');
    linkSync(decoy, lockPath(runDir));
    const lock = await acquireRunLock({ runDir, command: 'start', signal });
    expect(lock.problems[0]).toContain('was a file with 2 links');
    await lock.release();
    expect(readFileSync(decoy, 'utf8')).toBe('precious\n');
    expect(statSync(lockPath(runDir)).nlink).toBe(1);
  });

  it('takes back a run directory other accounts can write (mode 0700, said), and refuses one that is a symlink', async () => {
    const open = mkdtempSync(join(dir, 'open-'));
    chmodSync(open, 0o777);
    const lock = await acquireRunLock({ runDir: open, command: 'start', signal });
    expect(lock.held).toBe(true);
    expect(lock.problems).toEqual([]);
    expect(lock.notes?.[0]).toMatch(/mode 0777: set to \d+:\d+ mode 0700/);
    expect(statSync(open).mode & 0o7777).toBe(0o700);
    await lock.release();
    const link = join(dir, 'linked-run-dir');
    symlinkSync(mkdtempSync(join(dir, 'target-')), link);
    const err2 = await acquireRunLock({ runDir: link, command: 'start', signal }).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(RunLockError);
    expect((err2 as Error).message).toContain('is a symbolic link');
    // A shutdown command goes on without the lock.
    const none = await acquireRunLock({ runDir: link, command: 'guests_shutdown', signal });
    expect(none.held).toBe(false);
    expect(none.problems[0]).toContain('goes on without the lock so that the guests are handled');
    expect(existsSync(lockPath(link))).toBe(false);
  });

  it('a shutdown command waits for a stop holder up to the bound its line names, then goes on without the lock, loudly', async () => {
    const until = Date.now() + 800;
    const holder = await otherHolder(lockPath(dir), `1 ? stop ${until}\n`);
    const said: string[] = [];
    const lock = await acquireRunLock({ runDir: dir, command: 'stop', signal, waitMs: 0, onWait: (_h, how) => said.push(how) });
    expect(Date.now()).toBeGreaterThanOrEqual(until - 50);
    expect(said).toHaveLength(1);
    expect(said[0]).toContain('(its own bound) for another rc.libvirt run (pid 1, "stop")');
    expect(lock.held).toBe(false);
    expect(lock.problems[0]).toContain('goes on without the lock so that the guests are handled');
    await lock.release();
    expect(isFree(lockPath(dir))).toBe(false); // still the other run's
    holder.end();
  });

  it('a shutdown command takes the lock when a stop holder ends within its bound', async () => {
    const holder = await otherHolder(lockPath(dir), `1 ? shutdown ${Date.now() + 30_000}\n`);
    setTimeout(() => holder.end(), 300);
    const lock = await acquireRunLock({ runDir: dir, command: 'guests_shutdown', signal, waitMs: 0 });
    expect(lock).toMatchObject({ held: true, problems: [] });
    expect(readFileSync(lockPath(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+ guests_shutdown -\\n$`));
    await lock.release();
  });

  it('writes the bound of its run into its line', async () => {
    const t = Date.now();
    const lock = await acquireRunLock({ runDir: dir, command: 'stop', signal, boundMs: 400_000 });
    const until = Number(readFileSync(lockPath(dir), 'utf8').trim().split(' ')[3]);
    expect(until).toBeGreaterThanOrEqual(t + 400_000);
    expect(until).toBeLessThan(t + 410_000);
    await lock.release();
  });

  it('the bound of a run: TIMEOUT and margins for the shutdown commands, none for start and guests_reboot', () => {
    const s = { timeout: 300, daemonTimeout: 30 };
    expect(runBoundMs('stop', s)).toBe(300_000 + STOP_MARGIN_MS + 90_000 + RUN_MARGIN_MS);
    expect(runBoundMs('guests_shutdown', s)).toBe(runBoundMs('stop', s));
    expect(runBoundMs('restart', s)).toBe(runBoundMs('stop', s)! + 90_000);
    expect(runBoundMs('soft_restart', s)).toBe(180_000 + RUN_MARGIN_MS);
    expect(runBoundMs('start', s)).toBeUndefined();
    expect(runBoundMs('guests_reboot', s)).toBeUndefined();
  });
});

// Several runs started at the same moment, right after a crashed one left its
// line in the lock file: exactly one at a time may hold the lock. Each run is a separate
// node process (the lock code bundled by esbuild); each notes when it held it.
describe('run lock under a race', () => {
  const raceDir = mkdtempSync(join(tmpdir(), 'rcl-lockrace-'));
  afterAll(() => rmSync(raceDir, { recursive: true, force: true }));

  const script = join(raceDir, 'holder.cjs');

  it('never lets two runs hold it at once when they find the same stale lock', async () => {
    await build({
      stdin: {
        contents: `
          const { acquireRunLock } = require(${JSON.stringify(join(import.meta.dirname, '../../../src/rc/run-lock.ts'))});
          const { appendFileSync } = require('node:fs');
          const [dir, out, goAt, command] = process.argv.slice(2);
          const wall = () => performance.timeOrigin + performance.now();
          (async () => {
            while (wall() < Number(goAt)) {}
            const lock = await acquireRunLock({ runDir: dir, command: command || 'race', signal: new AbortController().signal, waitMs: 60000 });
            if (out === 'hold') {
              // As a run does: SIGINT and SIGTERM bring it to an end of its own, a SIGINT here only noted.
              process.on('SIGINT', () => process.stdout.write('SIGINT\\n'));
              process.on('SIGTERM', () => {
                process.stdout.write('SIGTERM\\n');
                setTimeout(async () => { await lock.release(); process.exit(0); }, 300);
              });
              process.stdout.write('held\\n');
              setInterval(() => {}, 1000);
              return;
            }
            const from = wall();
            await new Promise((r) => setTimeout(r, 20));
            appendFileSync(out, process.pid + ' ' + from + ' ' + wall() + '\\n');
            await lock.release();
          })().catch((e) => { console.error(e); process.exit(1); });
        `,
        resolveDir: raceDir,
        loader: 'js',
      },
      bundle: true,
      platform: 'node',
      format: 'cjs',
      outfile: script,
      logLevel: 'error',
    });
    for (let round = 0; round < 4; round++) {
      const runDir = join(raceDir, `run${round}`);
      mkdirSync(runDir);
      writeFileSync(lockPath(runDir), '999999999 12345 stop\n'); // left by a crashed run
      const out = join(raceDir, `held${round}`);
      writeFileSync(out, '');
      const goAt = performance.timeOrigin + performance.now() + 1500;
      const children = Array.from({ length: 6 }, () => spawn(process.execPath, [script, runDir, out, String(goAt)], { stdio: ['ignore', 'ignore', 'pipe'] }));
      const codes = await Promise.all(
        children.map(
          (c) =>
            new Promise<string>((resolve) => {
              let err = '';
              c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
              c.on('close', (code) => resolve(`${code}${err ? `: ${err}` : ''}`));
            }),
        ),
      );
      expect(codes).toEqual(Array(6).fill('0'));
      const held = readFileSync(out, 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(' ').map(Number) as [number, number, number])
        .sort((a, b) => a[1] - b[1]);
      expect(held).toHaveLength(6);
      for (let i = 1; i < held.length; i++) {
        expect(held[i]![1], `round ${round}: pid ${held[i]![0]} took the lock while pid ${held[i - 1]![0]} held it`).toBeGreaterThanOrEqual(held[i - 1]![2]);
      }
      expect(readFileSync(lockPath(runDir), 'utf8')).toBe('');
      expect(isFree(lockPath(runDir))).toBe(true);
    }
  }, 60_000);

  // A holder of the lock, as a run in a process group of its own (a terminal's foreground job).
  async function holdingRun(runDir: string, command: string): Promise<{ child: ChildProcess; out: () => string; exited: Promise<number | null> }> {
    const child = spawn(process.execPath, [script, runDir, 'hold', '0', command], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    others.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const started = Date.now();
    while (!out.includes('held')) {
      if (Date.now() - started > 20_000 || child.exitCode !== null) throw new Error(`the holder did not take the lock: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return { child, out: () => out, exited };
  }

  it('a Ctrl-C (SIGINT to the holder\'s whole process group) does not free the lock while the run goes on', async () => {
    const runDir = join(raceDir, 'ctrlc');
    mkdirSync(runDir, { mode: 0o700 });
    const h = await holdingRun(runDir, 'stop');
    process.kill(-h.child.pid!, 'SIGINT');
    await new Promise((r) => setTimeout(r, 500));
    expect(h.out()).toContain('SIGINT');
    expect(h.child.exitCode).toBeNull();
    expect(isFree(lockPath(runDir))).toBe(false);
    h.child.kill('SIGKILL');
    await h.exited;
    expect(isFree(lockPath(runDir))).toBe(true);
  });

  it('a shutdown command asks a start holder to end (SIGTERM to its checked pid) and takes the lock after it', async () => {
    const runDir = join(raceDir, 'takeover');
    mkdirSync(runDir, { mode: 0o700 });
    const h = await holdingRun(runDir, 'start');
    const said: string[] = [];
    const lock = await acquireRunLock({ runDir, command: 'stop', signal, takeoverWaitMs: 20_000, onWait: (_h, how) => said.push(how) });
    expect(lock).toMatchObject({ held: true, problems: [] });
    expect(said[0]).toContain(`pid ${h.child.pid}, "start") holds the run lock: asked it to end (SIGTERM)`);
    expect(h.out()).toContain('SIGTERM');
    expect(await h.exited).toBe(0);
    await lock.release();
  });

  it('a run that is not a shutdown command never signals the holder', async () => {
    const runDir = join(raceDir, 'nosignal');
    mkdirSync(runDir, { mode: 0o700 });
    const h = await holdingRun(runDir, 'start');
    const err = await acquireRunLock({ runDir, command: 'guests_reboot', signal, waitMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunLockError);
    expect(h.out()).not.toContain('SIGTERM');
    h.child.kill('SIGKILL');
    await h.exited;
  });

  it('a run killed while it holds the lock leaves nothing that blocks the next run', async () => {
    const runDir = join(raceDir, 'crash');
    mkdirSync(runDir);
    const crashing = spawn(process.execPath, [script, runDir, 'hold', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      crashing.stdout!.on('data', (d: Buffer) => (d.toString().includes('held') ? resolve() : undefined));
      crashing.on('close', (code) => reject(new Error(`the holder exited ${code} before holding the lock`)));
    });
    expect(readFileSync(lockPath(runDir), 'utf8')).toMatch(new RegExp(`^${crashing.pid} \\d+ race -\\n$`));
    crashing.kill('SIGKILL');
    const lock = await acquireRunLock({ runDir, command: 'start', signal, waitMs: 10_000 });
    expect(readFileSync(lockPath(runDir), 'utf8')).toContain(`${process.pid} `);
    await lock.release();
  });
});
