// The QMP driver's wait for a guest to go off when QEMU hangs on its way out
// (QEMU 7.2 can, in monitor_cleanup): the guest's SHUTDOWN was seen, the
// process stays, the monitor answers nothing. The wait must not last until the
// caller's deadline (which ends in a destroy): the stuck QEMU is killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createQmpDriver } from '../../../../src/domain/qmp/qmp-driver.js';
import { createMemoryLog } from '../../../../src/report/log.js';
import { GREETING } from './fake-qmp-server.js';

describe('QMP driver: a QEMU stuck after its guest shut down', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let server: Server | undefined;
  afterEach(async () => {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is killed once the guest has been down EXIT_GRACE_MS, and the wait reports it off', async () => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-qmpexit-'));
    const guestsDir = join(dir, 'guests');
    const runDir = join(dir, 'run');
    mkdirSync(guestsDir);
    mkdirSync(runDir, { mode: 0o700 });
    writeFileSync(join(guestsDir, 'stuck.json'), JSON.stringify({ argv: ['qemu-system-x86_64', '-m', '64'] }));
    const qmpPath = join(runDir, 'stuck.qmp');
    // Stands in for the hung QEMU: a process whose command line names the guest's QMP socket.
    child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', `unix:${qmpPath},server=on,wait=off`], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.once('exit', (_code, sig) => resolve(sig)));
    writeFileSync(join(runDir, 'stuck.pid'), `${child.pid}\n`);
    // Its monitor greets, reports the guest's SHUTDOWN, then answers nothing more.
    server = createServer((s) => {
      s.on('error', () => undefined);
      s.write(`${JSON.stringify(GREETING)}\n`);
      let buf = '';
      let greeted = false;
      s.on('data', (d: Buffer) => {
        buf += d.toString();
        const nl = buf.indexOf('\n');
        if (nl < 0 || greeted) return;
        greeted = true;
        const cmd = JSON.parse(buf.slice(0, nl)) as { id?: string };
        s.write(`${JSON.stringify({ return: {}, id: cmd.id })}\n`);
        s.write(`${JSON.stringify({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: { seconds: 1, microseconds: 0 } })}\n`);
      });
    });
    await new Promise<void>((resolve) => server!.listen(qmpPath, resolve));
    const log = createMemoryLog();
    const driver = createQmpDriver({ guestsDir, runDir, saveDir: join(dir, 'save'), qemuTimeoutMs: 2000, log });
    try {
      expect(await driver.waitForState('stuck', ['shutoff'], { signal: AbortSignal.timeout(18_000) })).toBe('shutoff');
      expect(await exited).toBe('SIGKILL');
      expect(log.lines.some((l) => l.level === 'warn' && /has not exited; killing it/.test(l.msg))).toBe(true);
    } finally {
      await driver.close();
    }
  }, 20_000);
});
