// The QMP driver's wait for a guest to go off when QEMU hangs on its way out
// (QEMU 7.2 can, in monitor_cleanup): the guest's SHUTDOWN was seen, the
// process stays, the monitor answers nothing. The wait must not last until the
// caller's deadline (which ends in a destroy): the stuck QEMU is killed.
// And a shutdown must not open the way to that hang: its monitor connection is
// held from the press until QEMU exits, so the guest's SHUTDOWN is heard and no
// new connection negotiates with a QEMU on its way out.
// A real process on purpose: the driver's checked SIGKILL (by pid, after
// reading /proc/PID to see that it is still the guest's QEMU) is what is
// tested. The process is the test's own child (a node stand-in whose command
// line names the guest's QMP socket), the monitor its own socket server.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { qmpOption } from '../../../../src/domain/qmp/qemu-process.js';
import { createQmpDriver } from '../../../../src/domain/qmp/qmp-driver.js';
import { createMemoryLog } from '../../../../src/util/log.js';
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

  /** A guest `name` whose QEMU is a stand-in process and whose monitor is `onConnection`. */
  async function stuckGuest(name: string, onConnection: (s: Socket) => void): Promise<{ guestsDir: string; runDir: string; exited: Promise<NodeJS.Signals | null> }> {
    dir = mkdtempSync(join(tmpdir(), 'rcl-qmpexit-'));
    const guestsDir = join(dir, 'guests');
    const runDir = join(dir, 'run');
    mkdirSync(guestsDir);
    mkdirSync(runDir, { mode: 0o700 });
    writeFileSync(join(guestsDir, `${name}.json`), JSON.stringify({ argv: ['qemu-system-x86_64', '-m', '64'] }));
    const qmpPath = join(runDir, `${name}.qmp`);
    // Stands in for the hung QEMU: a process whose command line names the guest's QMP socket.
    child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', '-qmp', qmpOption(qmpPath)], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.once('exit', (_code, sig) => resolve(sig)));
    writeFileSync(join(runDir, `${name}.pid`), `${child.pid}\n`);
    server = createServer((s) => {
      s.on('error', () => undefined);
      onConnection(s);
    });
    await new Promise<void>((resolve) => server!.listen(qmpPath, resolve));
    return { guestsDir, runDir, exited };
  }

  /** Call `cb` with each command (one JSON per line) the client sends on `s`. */
  function commands(s: Socket, cb: (cmd: { execute: string; id?: string }) => void): void {
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        cb(JSON.parse(line) as { execute: string; id?: string });
      }
    });
  }

  const send = (s: Socket, o: unknown): void => void s.write(`${JSON.stringify(o)}\n`);
  const SHUTDOWN = { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: { seconds: 1, microseconds: 0 } };

  it('is killed once the guest has been down EXIT_GRACE_MS, and the wait reports it off', async () => {
    // Its monitor greets, reports the guest's SHUTDOWN, then answers nothing more.
    const { guestsDir, runDir, exited } = await stuckGuest('stuck', (s) => {
      send(s, GREETING);
      let greeted = false;
      commands(s, (cmd) => {
        if (greeted) return;
        greeted = true;
        send(s, { return: {}, id: cmd.id });
        send(s, SHUTDOWN);
      });
    });
    const log = createMemoryLog();
    const driver = createQmpDriver({ guestsDir, runDir, saveDir: join(dir!, 'save'), qemuTimeoutMs: 2000, log });
    try {
      expect(await driver.waitForState('stuck', ['shutoff'], { signal: AbortSignal.timeout(18_000) })).toBe('shutoff');
      expect(await exited).toBe('SIGKILL');
      expect(log.lines.some((l) => l.level === 'warn' && /has not exited; killing it/.test(l.msg))).toBe(true);
    } finally {
      await driver.close();
    }
  }, 20_000);

  it('a shutdown keeps its connection until QEMU exits: the SHUTDOWN soon after the press is heard, no connection negotiates during the exit', async () => {
    // QEMU as it behaves here: the guest powers off a moment after the press,
    // QEMU sends SHUTDOWN to the connections negotiated at that moment only, and
    // from then on a new connection gets its greeting but no answer (the exit hang).
    let down = false;
    let lateConnections = 0;
    const open = new Set<Socket>();
    const { guestsDir, runDir, exited } = await stuckGuest('late', (s) => {
      send(s, GREETING);
      if (down) {
        lateConnections++;
        return;
      }
      s.on('close', () => open.delete(s));
      commands(s, (cmd) => {
        if (cmd.execute === 'qmp_capabilities') open.add(s);
        if (cmd.execute === 'query-status') return send(s, { return: { status: 'running', running: true }, id: cmd.id });
        send(s, { return: {}, id: cmd.id });
        if (cmd.execute === 'system_powerdown') {
          setTimeout(() => {
            down = true;
            for (const c of open) send(c, SHUTDOWN);
          }, 150);
        }
      });
    });
    const log = createMemoryLog();
    const driver = createQmpDriver({ guestsDir, runDir, saveDir: join(dir!, 'save'), qemuTimeoutMs: 2000, log });
    try {
      await driver.shutdown('late', { signal: AbortSignal.timeout(5000) });
      // The ladder waits a little later than the press: by then the guest is down.
      await new Promise((r) => setTimeout(r, 400));
      expect(await driver.waitForState('late', ['shutoff'], { signal: AbortSignal.timeout(18_000) })).toBe('shutoff');
      expect(await exited).toBe('SIGKILL');
      expect(lateConnections).toBe(0);
    } finally {
      await driver.close();
    }
  }, 25_000);
});
