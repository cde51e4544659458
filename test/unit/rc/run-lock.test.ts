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
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { exitCodeOfError } from '../../../src/cli/exit-codes.js';
import { NotInstalledError, RunLockError } from '../../../src/rc/errors.js';
import { acquireRunLock, FLOCK, lockPath } from '../../../src/rc/run-lock.js';

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
    expect(readFileSync(lockPath(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+ start\\n$`));
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
          const [dir, out, goAt] = process.argv.slice(2);
          const wall = () => performance.timeOrigin + performance.now();
          (async () => {
            while (wall() < Number(goAt)) {}
            const lock = await acquireRunLock({ runDir: dir, command: 'race', signal: new AbortController().signal, waitMs: 60000 });
            if (out === 'hold') {
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

  it('a run killed while it holds the lock leaves nothing that blocks the next run', async () => {
    const runDir = join(raceDir, 'crash');
    mkdirSync(runDir);
    const crashing = spawn(process.execPath, [script, runDir, 'hold', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      crashing.stdout!.on('data', (d: Buffer) => (d.toString().includes('held') ? resolve() : undefined));
      crashing.on('close', (code) => reject(new Error(`the holder exited ${code} before holding the lock`)));
    });
    expect(readFileSync(lockPath(runDir), 'utf8')).toMatch(new RegExp(`^${crashing.pid} \\d+ race\\n$`));
    crashing.kill('SIGKILL');
    const lock = await acquireRunLock({ runDir, command: 'start', signal, waitMs: 10_000 });
    expect(readFileSync(lockPath(runDir), 'utf8')).toContain(`${process.pid} `);
    await lock.release();
  });
});
