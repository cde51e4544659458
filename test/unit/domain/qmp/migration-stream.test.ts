// The restore side of the migration stream: feedMigration sends the saved
// image into QEMU's incoming socket. QEMU closes its end as soon as it has
// read the whole stream, which can happen before our end has finished: that
// is a success (the demo saw "QEMU closed the incoming migration socket" on
// restores that had in fact completed). A peer that closes early is a failure.
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { feedMigration, receiveMigration } from '../../../../src/domain/qmp/migration-stream.js';
import { InterruptedError } from '../../../../src/domain/errors.js';

const SIZE = 4 * 1024 * 1024 + 123;

describe('migration stream', () => {
  let dir: string;
  let image: string;
  let data: Buffer;
  const servers: Server[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-migstream-'));
    image = join(dir, 'guest.img');
    data = randomBytes(SIZE);
    await writeFile(image, data, { mode: 0o600 });
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) s.close();
    await rm(dir, { recursive: true, force: true });
  });

  // A stand-in for QEMU's incoming side: reads `limit` bytes, then closes its end at once.
  const listen = async (path: string, limit: number): Promise<{ got: Promise<number> }> => {
    const server = createServer();
    servers.push(server);
    const got = new Promise<number>((resolve) => {
      server.on('connection', (s: Socket) => {
        let n = 0;
        s.on('data', (b: Buffer) => {
          n += b.length;
          if (n >= limit) {
            s.destroy();
            resolve(n);
          }
        });
        s.on('error', () => undefined);
      });
    });
    await new Promise<void>((r) => server.listen(path, () => r()));
    return { got };
  };

  it('succeeds when QEMU reads everything and closes its end at once (repeated: it is a race)', async () => {
    for (let i = 0; i < 15; i++) {
      const sock = join(dir, `in-${i}.sock`);
      const { got } = await listen(sock, SIZE);
      const sent = await feedMigration(sock, image, { signal: new AbortController().signal, connectMs: 5000 });
      expect(sent).toBe(SIZE);
      expect(await got).toBe(SIZE);
    }
  });

  it('fails, naming the socket, when QEMU closes before it has read the whole image', async () => {
    const sock = join(dir, 'early.sock');
    void listen(sock, 64 * 1024);
    const err = await feedMigration(sock, image, { signal: new AbortController().signal, connectMs: 5000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(String((err as Error).message)).toContain(`${sock}: QEMU closed the incoming migration socket`);
  });

  it('round trip: what receiveMigration writes is what feedMigration sends', async () => {
    const sock = join(dir, 'save.sock');
    const out = await open(join(dir, 'copy.img'), 'w', 0o600);
    try {
      const rx = await receiveMigration(sock, out, new AbortController().signal);
      expect(await feedMigration(sock, image, { signal: new AbortController().signal, connectMs: 5000 })).toBe(SIZE);
      expect(await rx.done).toBe(SIZE);
      await rx.close();
    } finally {
      await out.close();
    }
    expect((await readFile(join(dir, 'copy.img'))).equals(data)).toBe(true);
  });
});
