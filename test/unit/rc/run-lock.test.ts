import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ExitError } from '../../../src/cli/errors.js';
import { acquireRunLock, lockPath } from '../../../src/rc/run-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const signal = new AbortController().signal;

describe('run lock', () => {
  it('writes the holder and removes the file on release', async () => {
    const lock = await acquireRunLock({ runDir: dir, command: 'start', signal });
    expect(readFileSync(lockPath(dir), 'utf8')).toMatch(new RegExp(`^${process.pid} \\d+ start\\n$`));
    await lock.release();
    expect(() => readFileSync(lockPath(dir))).toThrow();
  });

  it('makes a second run wait, then give up naming the holder', async () => {
    const lock = await acquireRunLock({ runDir: dir, command: 'stop', signal });
    // The same process may not take it twice; pretend to be another holder: pid 1 (alive, start time differs).
    await lock.release();
    writeFileSync(lockPath(dir), '1 ? stop\n');
    let waited = false;
    const err = await acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 300, pollMs: 50, onWait: () => { waited = true; } })
      .then(() => undefined, (e: unknown) => e);
    expect(waited).toBe(true);
    expect(err).toBeInstanceOf(ExitError);
    expect((err as ExitError).exitCode).toBe(1);
    expect((err as Error).message).toContain('pid 1');
    expect((err as Error).message).toContain('"stop"');
    rmSync(lockPath(dir));
  });

  it('takes over a lock whose holder is dead', async () => {
    writeFileSync(lockPath(dir), '999999999 12345 stop\n');
    const lock = await acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 0 });
    expect(readFileSync(lockPath(dir), 'utf8')).toContain(`${process.pid} `);
    await lock.release();
  });

  it('takes over a lock whose pid was reused by another process', async () => {
    writeFileSync(lockPath(dir), '1 1 stop\n'); // pid 1 runs, but it did not start at tick 1
    const lock = await acquireRunLock({ runDir: dir, command: 'start', signal, waitMs: 0 }).catch((e: unknown) => e);
    if (lock instanceof Error) throw lock;
    await (lock as { release: () => Promise<void> }).release();
  });
});
