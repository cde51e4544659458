// Messages to syslog: one real util-linux `logger` per run, fed through its
// stdin, each line with its own priority. The machine may have no /dev/log, so
// `logger` is pointed at a UDP server of this test (a wrapper adds -d -n -P);
// the wrapper also counts how often `logger` was started.
// Real `logger` processes on purpose: what is tested is how the log feeds and
// ends a child process (one per run, a flush, a hung one killed). They are
// the test's own children, pointed at its own UDP server, never at the host's
// syslog; the only pid it signals (0, a liveness probe) is its own hung logger's.
import { createSocket, type Socket } from 'node:dgram';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLog, SYSLOG_FLUSH_MS } from '../../../src/util/log.js';

const LOGGER = '/usr/bin/logger';
let dir: string;
let server: Socket;
let received: string[] = [];

beforeAll(async () => {
  if (!existsSync(LOGGER)) throw new Error(`${LOGGER} is missing: apt-get install bsdutils (or run: node testbed/setup.mjs)`);
  dir = mkdtempSync(join(tmpdir(), 'rcl-syslog-'));
  server = createSocket('udp4');
  server.on('message', (m) => received.push(m.toString()));
  await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
});
afterAll(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

// A `logger` that sends to this test's server and notes each start in `starts`.
function wrapper(name: string): { path: string; starts: string } {
  const path = join(dir, name);
  const starts = join(dir, `${name}.starts`);
  writeFileSync(path, `#!/bin/sh\necho started >> '${starts}'\nexec ${LOGGER} -d -n 127.0.0.1 -P ${server.address().port} --rfc3164 "$@"\n`);
  chmodSync(path, 0o755);
  return { path, starts };
}

const quietStreams = (): { stdout: PassThrough; stderr: PassThrough } => ({ stdout: new PassThrough(), stderr: new PassThrough() });

async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; received: ${JSON.stringify(received)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('syslog through logger', () => {
  it('sends every message but debug, in order, each line with its priority, through one logger process', async () => {
    received = [];
    const w = wrapper('logger-a');
    const log = createLog({ ...quietStreams(), verbosity: 1, logger: w.path });
    log.info('first: info');
    log.debug('not for syslog');
    log.warn('a warning\nover two lines');
    log.notice("'web server': saved <b>");
    log.error('an error');
    log.record?.('info', 'only to syslog');
    await log.flush();
    await until('6 syslog lines', () => received.length >= 6);
    const lines = received.map((l) => {
      const m = /^<(\d+)>.* rc\.libvirt: (.*)$/.exec(l);
      if (!m) throw new Error(`not a syslog line of rc.libvirt: ${l}`);
      return [Number(m[1]), m[2]];
    });
    expect(lines).toEqual([
      [30, 'first: info'],
      [28, 'a warning'],
      [28, 'over two lines'],
      [29, "'web server': saved <b>"],
      [27, 'an error'],
      [30, 'only to syslog'],
    ]);
    expect(readFileSync(w.starts, 'utf8')).toBe('started\n');
  });

  it('starts logger after the task that sent the first message (what that task does next goes first), or at once on a flush', async () => {
    received = [];
    const w = wrapper('logger-later');
    let spawned = 0;
    const onSpawn = (): void => void spawned++;
    subscribe('child_process', onSpawn);
    try {
      const log = createLog({ ...quietStreams(), verbosity: 0, logger: w.path });
      log.info('one');
      log.notice('two');
      expect(spawned).toBe(0);
      await new Promise((r) => setImmediate(r));
      expect(spawned).toBe(1);
      log.info('three');
      await log.flush();
      // A message right before a flush: flush starts the logger itself.
      log.info('four');
      await log.flush();
      expect(spawned).toBe(2);
    } finally {
      unsubscribe('child_process', onSpawn);
    }
    await until('4 syslog lines', () => received.length >= 4);
    expect(received.map((l) => l.replace(/^.*rc\.libvirt: /, ''))).toEqual(['one', 'two', 'three', 'four']);
    expect(readFileSync(w.starts, 'utf8')).toBe('started\nstarted\n');
  });

  it('starts a new logger for messages after a flush', async () => {
    received = [];
    const w = wrapper('logger-b');
    const log = createLog({ ...quietStreams(), verbosity: 0, logger: w.path });
    log.info('before');
    await log.flush();
    log.info('after');
    await log.flush();
    await until('2 syslog lines', () => received.length >= 2);
    expect(received.map((l) => l.replace(/^.*rc\.libvirt: /, ''))).toEqual(['before', 'after']);
    expect(readFileSync(w.starts, 'utf8')).toBe('started\nstarted\n');
  });

  it('a logger that cannot be started or that fails costs the run nothing', async () => {
    const missing = createLog({ ...quietStreams(), verbosity: 0, logger: join(dir, 'no-such-logger') });
    missing.error('lost');
    missing.info('lost too');
    await missing.flush();
    const failing = join(dir, 'failing-logger');
    writeFileSync(failing, '#!/bin/sh\nexit 1\n');
    chmodSync(failing, 0o755);
    const log = createLog({ ...quietStreams(), verbosity: 0, logger: failing });
    log.info('one');
    await new Promise((r) => setTimeout(r, 200));
    log.info('two, after it has exited');
    await log.flush();
  });

  it('a logger that hangs is killed by flush after SYSLOG_FLUSH_MS', async () => {
    const hanging = join(dir, 'hanging-logger');
    const pidFile = join(dir, 'hanging.pid');
    writeFileSync(hanging, `#!/bin/sh\necho $$ > '${pidFile}'\ntrap '' TERM HUP PIPE\nexec sleep 600 </dev/null\n`);
    chmodSync(hanging, 0o755);
    const log = createLog({ ...quietStreams(), verbosity: 0, logger: hanging });
    log.info('into the void');
    await until('the hanging logger to start', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const t0 = performance.now();
    await log.flush();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(SYSLOG_FLUSH_MS - 50);
    await until('the hanging logger to be gone', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
  });

  it('a console that is gone (writes throw EPIPE or EIO) costs the run nothing: the messages still reach syslog', async () => {
    received = [];
    const w = wrapper('logger-gone');
    const broken = (code: string): Writable =>
      new Writable({
        write(): void {
          throw Object.assign(new Error(`write ${code}`), { code });
        },
      });
    const log = createLog({ stdout: broken('EPIPE'), stderr: broken('EIO'), verbosity: 0, logger: w.path });
    expect(() => {
      log.info('saved one');
      log.error('failed two');
    }).not.toThrow();
    await log.flush();
    await until('both lines', () => received.length >= 2);
    expect(received.some((m) => m.includes('saved one'))).toBe(true);
    expect(received.some((m) => m.includes('failed two'))).toBe(true);
  });
});
