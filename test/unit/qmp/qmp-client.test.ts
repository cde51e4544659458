import { afterEach, describe, expect, it } from 'vitest';
import {
  InterruptedError,
  NotReachableError,
  OperationRefusedError,
  ProtocolError,
  TimedOutError,
} from '../../../src/domain/errors.js';
import { QmpClient, QmpCommandError, connectQmp } from '../../../src/qmp/qmp-client.js';
import { deadline } from '../../../src/util/deadline.js';
import { GREETING, startFakeServer, type FakeServer } from '../domain/qmp/fake-qmp-server.js';

let server: FakeServer | undefined;
const clients: QmpClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  await server?.close();
  server = undefined;
});

const sig = (): AbortSignal => AbortSignal.timeout(5000);

async function connect(maxLineBytes?: number): Promise<QmpClient> {
  if (!server) throw new Error('no server');
  const c = await connectQmp(server.path, { signal: sig(), ...(maxLineBytes ? { maxLineBytes } : {}) });
  clients.push(c);
  return c;
}

describe('QmpClient', () => {
  it('greets, negotiates capabilities, then runs commands', async () => {
    server = await startFakeServer(async (c) => {
      const cmd = await c.nextCommand();
      expect(cmd.execute).toBe('query-status');
      c.reply(cmd.id, { status: 'running', running: true });
    });
    const qmp = await connect();
    expect(qmp.state).toBe('running');
    expect(qmp.greeting?.capabilities).toEqual(['oob']);
    expect(await qmp.execute('query-status', undefined, { signal: sig() })).toEqual({ status: 'running', running: true });
  });

  it('sends arguments and sees every command only after qmp_capabilities', async () => {
    const seen: unknown[] = [];
    server = await startFakeServer(
      async (c) => {
        c.send(GREETING);
        const cap = await c.nextCommand();
        seen.push(cap.execute);
        c.reply(cap.id);
        const cmd = await c.nextCommand();
        seen.push(cmd);
        c.reply(cmd.id);
      },
      { greet: false },
    );
    const qmp = await connect();
    await qmp.execute('migrate', { uri: 'unix:/x' }, { signal: sig() });
    expect(seen[0]).toBe('qmp_capabilities');
    expect(seen[1]).toMatchObject({ execute: 'migrate', arguments: { uri: 'unix:/x' } });
  });

  it('delivers an event that arrives before the reply of the command that caused it', async () => {
    server = await startFakeServer(async (c) => {
      const cmd = await c.nextCommand();
      c.send({ event: 'POWERDOWN', data: {}, timestamp: { seconds: 10, microseconds: 500 } });
      c.send({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: { seconds: 10, microseconds: 900 } });
      c.reply(cmd.id);
    });
    const qmp = await connect();
    const l = qmp.listen(['SHUTDOWN']);
    await qmp.execute('system_powerdown', undefined, { signal: sig() });
    const e = await l.next({ signal: sig() });
    expect(e.event).toBe('SHUTDOWN');
    expect(e.data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(e.timestamp).toBeCloseTo(10000.9, 3);
    l.unsubscribe();
  });

  it('routes interleaved replies by id', async () => {
    server = await startFakeServer(async (c) => {
      const a = await c.nextCommand();
      const b = await c.nextCommand();
      c.reply(b.id, 'B');
      c.send({ event: 'RESUME', data: {} });
      c.reply(a.id, 'A');
    });
    const qmp = await connect();
    const [ra, rb] = await Promise.all([
      qmp.execute('a', undefined, { signal: sig() }),
      qmp.execute('b', undefined, { signal: sig() }),
    ]);
    expect([ra, rb]).toEqual(['A', 'B']);
  });

  it('turns an error reply into an OperationRefusedError with class and desc', async () => {
    server = await startFakeServer(async (c) => {
      const cmd = await c.nextCommand();
      c.send({ error: { class: 'GenericError', desc: 'migration is disabled' }, id: cmd.id });
      const next = await c.nextCommand();
      c.reply(next.id, 1);
    });
    const qmp = await connect();
    const err = await qmp.execute('migrate', {}, { signal: sig() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OperationRefusedError);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({ command: 'migrate', errorClass: 'GenericError', desc: 'migration is disabled' });
    // the connection stays usable
    expect(await qmp.execute('x', undefined, { signal: sig() })).toBe(1);
  });

  it('fails every pending call with InterruptedError when the peer closes mid-call', async () => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
      await c.nextCommand();
      c.socket.destroy();
    });
    const qmp = await connect();
    const l = qmp.listen('SHUTDOWN');
    const results = await Promise.allSettled([
      qmp.execute('a', undefined, { signal: sig() }),
      qmp.execute('b', undefined, { signal: sig() }),
      l.next({ signal: sig() }),
    ]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InterruptedError);
    }
    await qmp.closed;
    expect(qmp.state).toBe('idle');
    await expect(qmp.execute('c', undefined, { signal: sig() })).rejects.toBeInstanceOf(InterruptedError);
  });

  it('closing the client fails pending calls with InterruptedError', async () => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
    });
    const qmp = await connect();
    const p = qmp.execute('never-answered', undefined, { signal: sig() }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 20));
    await qmp.close();
    expect(await p).toBeInstanceOf(InterruptedError);
  });

  it.each([
    ['non-JSON', 'this is not json\n'],
    ['a JSON array', '[1,2,3]\n'],
    ['neither reply nor event', '{"hello":"world"}\n'],
    ['a reply without id', '{"return":{}}\n'],
  ])('treats %s as a protocol error: closes and fails the pending call', async (_what, garbage) => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
      c.sendRaw(garbage);
    });
    const qmp = await connect();
    const err = await qmp.execute('a', undefined, { signal: sig() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    await qmp.closed;
    expect(qmp.closedBy).toBeInstanceOf(ProtocolError);
  });

  it('treats an oversized line as a protocol error, also one that never ends', async () => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
      c.sendRaw('{"return": "' + 'x'.repeat(5000)); // no newline, ever
    });
    const qmp = await connect(1024);
    await expect(qmp.execute('a', undefined, { signal: sig() })).rejects.toBeInstanceOf(ProtocolError);
  });

  it('accepts a long line under the limit, split over many chunks', async () => {
    const big = 'y'.repeat(200_000);
    server = await startFakeServer(async (c) => {
      const cmd = await c.nextCommand();
      const text = `${JSON.stringify({ return: big, id: cmd.id })}\n`;
      for (let i = 0; i < text.length; i += 7000) c.sendRaw(text.slice(i, i + 7000));
    });
    const qmp = await connect();
    expect(await qmp.execute('a', undefined, { signal: sig() })).toBe(big);
  });

  it('a peer that connects but never greets is NotReachableError within the deadline', async () => {
    server = await startFakeServer(() => undefined, { greet: false });
    const d = deadline(300);
    const started = performance.now();
    const err = await connectQmp(server.path, { signal: d.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotReachableError);
    expect((err as Error).message).toMatch(/no QMP greeting/);
    expect(performance.now() - started).toBeLessThan(4000);
  });

  it('a peer that closes before greeting is NotReachableError', async () => {
    server = await startFakeServer((c) => c.end(), { greet: false });
    await expect(connectQmp(server.path, { signal: sig() })).rejects.toBeInstanceOf(NotReachableError);
  });

  it('a greeting that is not JSON is a protocol error', async () => {
    server = await startFakeServer((c) => c.sendRaw('\x00\xffgarbage\n'), { greet: false });
    await expect(connectQmp(server.path, { signal: sig() })).rejects.toBeInstanceOf(ProtocolError);
  });

  it('a greeting that is not QMP is a protocol error', async () => {
    server = await startFakeServer((c) => c.send({ hello: 1 }), { greet: false });
    await expect(connectQmp(server.path, { signal: sig() })).rejects.toBeInstanceOf(ProtocolError);
  });

  it('a socket nobody listens on is NotReachableError', async () => {
    await expect(connectQmp('/nonexistent/rcl/qmp.sock', { signal: sig() })).rejects.toBeInstanceOf(NotReachableError);
  });

  it('a slow reply past the deadline is TimedOutError; a late reply is dropped and the connection stays usable', async () => {
    server = await startFakeServer(async (c) => {
      const slow = await c.nextCommand();
      await new Promise((r) => setTimeout(r, 300));
      c.reply(slow.id, 'late');
      const next = await c.nextCommand();
      c.reply(next.id, 'ok');
    });
    const qmp = await connect();
    const d = deadline(50);
    await expect(qmp.execute('slow', undefined, { signal: d.signal })).rejects.toBeInstanceOf(TimedOutError);
    await new Promise((r) => setTimeout(r, 400));
    expect(await qmp.execute('next', undefined, { signal: sig() })).toBe('ok');
  });

  it('a slow reply within the deadline is returned', async () => {
    server = await startFakeServer(async (c) => {
      const slow = await c.nextCommand();
      await new Promise((r) => setTimeout(r, 200));
      c.reply(slow.id, 'slow but fine');
    });
    const qmp = await connect();
    expect(await qmp.execute('slow', undefined, { signal: deadline(3000).signal })).toBe('slow but fine');
  });

  it('a caller abort is InterruptedError, not a timeout', async () => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
    });
    const qmp = await connect();
    const ac = new AbortController();
    const p = qmp.execute('x', undefined, { signal: ac.signal });
    ac.abort(new Error('user pressed ^C'));
    await expect(p).rejects.toBeInstanceOf(InterruptedError);
  });

  it('listeners hear only their events; waitFor skips others; unsubscribe stops them', async () => {
    server = await startFakeServer(async (c) => {
      const cmd = await c.nextCommand();
      c.send({ event: 'RESET', data: { guest: false } });
      c.send({ event: 'STOP', data: {} });
      c.send({ event: 'RESET', data: { guest: true } });
      c.send({ event: 'RESUME', data: {} });
      c.reply(cmd.id);
    });
    const qmp = await connect();
    const resets = qmp.listen(['RESET', 'RESUME']);
    const all: string[] = [];
    const off = qmp.onEvent((e) => all.push(e.event));
    await qmp.execute('system_reset', undefined, { signal: sig() });
    const e = await resets.waitFor((x) => x.data['guest'] === true, { signal: sig() });
    expect(e.event).toBe('RESET');
    expect((await resets.next({ signal: sig() })).event).toBe('RESUME');
    expect(all).toEqual(['RESET', 'STOP', 'RESET', 'RESUME']);
    off();
    resets.unsubscribe();
    await expect(resets.next({ signal: sig() })).rejects.toBeInstanceOf(InterruptedError);
  });
});
