// runProcess ends at the program's exit, or its deadline, even when a
// grandchild keeps the program's stdout and stderr open (as QEMU `-daemonize
// -D logfile` does with stderr). The programs are the test's own sh scripts;
// each grandchild loops until the test creates its stop file, so every process
// a test starts ends when the test does, without signalling pids it did not
// start.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runProcess } from '../../../src/util/run.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-run-'));
let n = 0;
const stops: string[] = [];

/** A grandchild that holds the pipes it inherited until STOP exists, then writes its end marker. */
function grandchild(opts: { setsid: boolean }): { cmd: string; stop: string; gone: string } {
  const stop = join(dir, `stop${++n}`);
  const gone = join(dir, `gone${n}`);
  stops.push(stop);
  const loop = `while [ ! -e '${stop}' ]; do sleep 0.05; done; : > '${gone}'`;
  return { cmd: `${opts.setsid ? 'setsid ' : ''}sh -c "${loop}" &`, stop, gone };
}

async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 50));
  expect(existsSync(path), `${path} never appeared`).toBe(true);
}

afterEach(async () => {
  // Let every grandchild of the test go.
  for (const s of stops.splice(0)) writeFileSync(s, '');
  await new Promise((r) => setTimeout(r, 300));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('runProcess', () => {
  it('settles when the program exits although a grandchild still holds its stdout and stderr', async () => {
    const g = grandchild({ setsid: false });
    const r = await runProcess(['sh', '-c', `${g.cmd} echo started; exit 3`], { timeoutMs: 60_000, drainMs: 200 });
    expect(r).toMatchObject({ exitCode: 3, killedBy: null, timedOut: false, aborted: false, forced: false });
    expect(r.stdout).toBe('started\n');
    // The grandchild is still there (holding the pipes) when the call has ended.
    expect(existsSync(g.gone)).toBe(false);
    writeFileSync(g.stop, '');
    await waitFor(g.gone);
  });

  it('ends at its deadline when the program hangs and a grandchild in a session of its own holds the pipes', async () => {
    const g = grandchild({ setsid: true });
    const r = await runProcess(['sh', '-c', `${g.cmd} echo started; exec sleep 600`], { timeoutMs: 500, killGraceMs: 500, drainMs: 200 });
    expect(r).toMatchObject({ timedOut: true, killedBy: 'SIGTERM', exitCode: null });
    expect(r.stdout).toBe('started\n');
    expect(existsSync(g.gone)).toBe(false);
    writeFileSync(g.stop, '');
    await waitFor(g.gone);
  });

  it('still reads all of a large output written just before the exit', async () => {
    const big = join(dir, 'big');
    writeFileSync(big, 'x'.repeat(4 * 1024 * 1024));
    const r = await runProcess(['cat', big], { timeoutMs: 60_000, drainMs: 200 });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(readFileSync(big, 'utf8').length);
  });

  it('keeps output that sat in the pipe while the event loop was held up past the drain time', async () => {
    // The program exits at once; 0.2 s later this process is busy for 1.5 s;
    // meanwhile its grandchild prints the answer (at 0.25 s) and the drain's
    // time runs out (at 0.3 s). When the loop runs again, the answer is still
    // unread in the pipe.
    const p = runProcess(['sh', '-c', '(sleep 0.25; echo answer) & exit 0'], { timeoutMs: 60_000, drainMs: 300 });
    // Busy in the check phase (as when a callback parses many documents at
    // once): the next loop turn runs the timers before it reads the pipes.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await new Promise<void>((resolve) => setImmediate(() => {
      const until = performance.now() + 1500;
      while (performance.now() < until) {
        // busy
      }
      resolve();
    }));
    const r = await p;
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('answer\n');
  });

  it('reads output the grandchild writes within the drain time after the exit', async () => {
    const r = await runProcess(['sh', '-c', '(sleep 0.1; echo late) & echo early'], { timeoutMs: 60_000, drainMs: 2000 });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('early\nlate\n');
  });
});
