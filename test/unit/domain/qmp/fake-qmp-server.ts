// A scriptable fake QMP server on a real unix socket in a temp dir, for the client's tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One accepted connection: send lines, read the client's commands. */
export interface FakeConn {
  socket: Socket;
  send(obj: unknown): void;
  sendRaw(text: string): void;
  /** The next command the client sent (parsed). */
  nextCommand(): Promise<{ execute: string; id?: string; arguments?: unknown }>;
  reply(id: string | undefined, ret?: unknown): void;
  end(): void;
}

/** A fake QMP server; `onConnection` scripts each connection. */
export interface FakeServer {
  path: string;
  server: Server;
  conns: FakeConn[];
  close(): Promise<void>;
}

export const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: ['oob'] } };

/** Start a server; by default each connection greets and accepts qmp_capabilities before `script` runs. */
export async function startFakeServer(script: (c: FakeConn) => void | Promise<void>, opts: { greet?: boolean } = {}): Promise<FakeServer> {
  const dir = mkdtempSync(join(tmpdir(), 'rcl-fakeqmp-'));
  const path = join(dir, 'qmp.sock');
  const conns: FakeConn[] = [];
  const server = createServer((socket) => {
    let buf = '';
    const lines: string[] = [];
    let waiter: ((l: string) => void) | undefined;
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (waiter) {
          const w = waiter;
          waiter = undefined;
          w(l);
        } else lines.push(l);
      }
    });
    const conn: FakeConn = {
      socket,
      send: (o) => socket.write(`${JSON.stringify(o)}\n`),
      sendRaw: (t) => socket.write(t),
      nextCommand: () =>
        new Promise((resolve) => {
          const l = lines.shift();
          if (l !== undefined) resolve(JSON.parse(l));
          else waiter = (x) => resolve(JSON.parse(x));
        }),
      reply: (id, ret = {}) => socket.write(`${JSON.stringify({ return: ret, id })}\n`),
      end: () => socket.end(),
    };
    conns.push(conn);
    void (async () => {
      if (opts.greet !== false) {
        conn.send(GREETING);
        const cap = await conn.nextCommand();
        conn.reply(cap.id);
      }
      await script(conn);
    })();
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    server,
    conns,
    close: async () => {
      for (const c of conns) c.socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
