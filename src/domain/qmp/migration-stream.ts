// The byte streams of a save and a restore over unix sockets in the runtime
// directory: on save QEMU's `migrate` connects to a socket this process
// listens on and we write the stream to a file (works for a QEMU under a
// seccomp sandbox, unlike `exec:`); on restore QEMU listens
// (`migrate-incoming unix:`) and we feed it the file.
import { createConnection, createServer, type Socket } from 'node:net';
import type { FileHandle } from 'node:fs/promises';
import { sleep } from '../../util/deadline.js';
import { InterruptedError, NotReachableError, OperationRefusedError } from '../errors.js';
import { errorMessage } from '../../util/error-message.js';
import { abortError } from '../../qmp/abort.js';
import { openNoFollow, removeStale } from './private-dir.js';

/** A listening socket that writes the first connection's bytes into a file. */
export interface MigrationReceiver {
  /** Resolves with the byte count once the peer closed and every byte is written to the file (the caller fsyncs it). */
  done: Promise<number>;
  /** Stop listening and drop the connection (the file handle stays the caller's). */
  close(): Promise<void>;
}

/** Listen on `socketPath`; the first connection's bytes go to `file`. `signal` aborting drops the stream (pass one that no longer aborts once the stream is to be kept). */
export async function receiveMigration(socketPath: string, file: FileHandle, signal: AbortSignal): Promise<MigrationReceiver> {
  await removeStale(socketPath);
  const server = createServer();
  let conn: Socket | undefined;
  let fail: (err: unknown) => void = () => undefined;
  const done = new Promise<number>((resolve, reject) => {
    fail = reject;
    server.on('connection', (socket) => {
      if (conn) {
        socket.destroy();
        return;
      }
      conn = socket;
      server.close();
      void (async () => {
        let bytes = 0;
        for await (const chunk of socket as AsyncIterable<Buffer>) {
          await file.write(chunk);
          bytes += chunk.length;
        }
        return bytes;
      })().then(resolve, (err: unknown) => {
        // Close our end too, so QEMU's migration fails instead of blocking on a full socket.
        socket.destroy();
        const code = (err as NodeJS.ErrnoException).code;
        reject(new OperationRefusedError(`writing the migration stream from ${socketPath} failed: ${code ?? errorMessage(err)}`, { cause: err }));
      });
    });
    server.on('error', (err) => reject(new InterruptedError(`${socketPath}: ${err.message}`, { cause: err })));
  });
  done.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  const onAbort = (): void => {
    fail(abortError(signal, `${socketPath}: receiving the migration stream`));
    conn?.destroy();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  void done.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => undefined);
  return {
    done,
    close: async () => {
      signal.removeEventListener('abort', onAbort);
      conn?.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await removeStale(socketPath).catch(() => undefined);
    },
  };
}

/** Connect to QEMU's incoming socket (retrying until it listens, within `connectMs`) and send it `imagePath`. */
export async function feedMigration(socketPath: string, imagePath: string, opts: { signal: AbortSignal; connectMs: number }): Promise<number> {
  const fh = await openNoFollow(imagePath);
  try {
    const socket = await connectWithRetry(socketPath, opts);
    let broken: Error | undefined;
    socket.on('error', (err) => (broken = err));
    let bytes = 0;
    const onAbort = (): void => {
      socket.destroy();
    };
    opts.signal.addEventListener('abort', onAbort, { once: true });
    const check = (): void => {
      if (opts.signal.aborted) throw abortError(opts.signal, `${socketPath}: feeding ${imagePath}`);
      if (broken || socket.destroyed) throw new InterruptedError(`${socketPath}: QEMU closed the incoming migration socket${broken ? `: ${broken.message}` : ''}`, { cause: broken });
    };
    try {
      for await (const chunk of fh.createReadStream({ autoClose: false, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
        check();
        if (!socket.write(chunk)) await waitDrain(socket);
        bytes += chunk.length;
      }
      // All sent. QEMU may already have read it all and closed its end: from here
      // on only its MIGRATION status tells whether the restore worked.
      if (opts.signal.aborted) throw abortError(opts.signal, `${socketPath}: feeding ${imagePath}`);
      if (!socket.destroyed) {
        await new Promise<void>((resolve) => {
          socket.once('close', () => resolve());
          socket.end(() => resolve());
        });
      }
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      socket.destroy();
    }
    return bytes;
  } finally {
    await fh.close();
  }
}

/** Resolve when the socket drained or closed (the caller checks which). */
function waitDrain(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.once('drain', done);
    socket.once('close', done);
  });
}

async function connectWithRetry(path: string, opts: { signal: AbortSignal; connectMs: number }): Promise<Socket> {
  const until = performance.now() + opts.connectMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = createConnection({ path });
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (err) {
      if (performance.now() >= until) throw new NotReachableError(`${path}: QEMU does not listen for the incoming migration (${String(err)})`, { cause: err });
      await sleep(50, opts.signal).catch(() => {
        throw abortError(opts.signal, `${path}: connecting`);
      });
    }
  }
}
