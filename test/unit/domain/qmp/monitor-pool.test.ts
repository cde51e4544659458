import { afterEach, describe, expect, it } from 'vitest';
import { InterruptedError } from '../../../../src/domain/errors.js';
import { MonitorPool } from '../../../../src/domain/qmp/monitor-pool.js';
import type { QmpEvent } from '../../../../src/qmp/qmp-events.js';
import { startFakeServer, type FakeServer } from './fake-qmp-server.js';

let server: FakeServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});
const opts = (): { signal: AbortSignal; connectMs: number } => ({ signal: AbortSignal.timeout(5000), connectMs: 3000 });

describe('MonitorPool', () => {
  it('shares one connection between concurrent users and closes it after the last release', async () => {
    const seen: [string, QmpEvent][] = [];
    server = await startFakeServer(async (c) => {
      for (;;) {
        const cmd = await c.nextCommand();
        c.send({ event: 'STOP', data: {} });
        c.reply(cmd.id, cmd.execute);
      }
    });
    const pool = new MonitorPool((g, e) => seen.push([g, e]));
    const [a, b] = await Promise.all([pool.acquire('g1', server.path, opts()), pool.acquire('g1', server.path, opts())]);
    expect(a.qmp).toBe(b.qmp);
    expect(server.conns).toHaveLength(1);
    expect(await a.qmp.execute('one', undefined, opts())).toBe('one');
    await a.release();
    expect(b.qmp.state).toBe('running');
    await b.release();
    expect(b.qmp.state).toBe('idle');
    expect(seen[0]?.[0]).toBe('g1');
    expect(seen[0]?.[1].event).toBe('STOP');
    // A new acquire opens a new connection.
    await pool.with('g1', server.path, opts(), async (q) => expect(await q.execute('two', undefined, opts())).toBe('two'));
    expect(server.conns).toHaveLength(2);
    await pool.closeAll();
  });

  it('closeAll fails what is pending on every connection', async () => {
    server = await startFakeServer(async (c) => {
      await c.nextCommand();
    });
    const pool = new MonitorPool();
    const lease = await pool.acquire('g', server.path, opts());
    const p = lease.qmp.execute('hang', undefined, opts()).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 20));
    await pool.closeAll();
    expect(await p).toBeInstanceOf(InterruptedError);
    await lease.release();
  });
});
