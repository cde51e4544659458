// A generic async protocol runner for newline-delimited messages over a unix
// socket: connection states idle → connecting → running → disconnecting, a
// reader loop that hands each line to the subclass, and pending replies by id.
// The subclass establishes its session (reading lines itself) before the
// reader loop starts. The core has no timeouts: callers pass signals.
import { createConnection, type Socket } from 'node:net';
import { DomainError, InterruptedError, NotReachableError, ProtocolError } from '../domain/errors.js';
import { abortError } from './abort.js';

/** Where a runner is in its life. */
export type RunnerState = 'idle' | 'connecting' | 'running' | 'disconnecting';

/** Options of a runner. */
export interface LineProtocolOptions {
  /** Longest line accepted, in bytes (without the newline); a longer one is a protocol error. Default 8 MiB. */
  maxLineBytes?: number;
}

interface Pending {
  resolve: (msg: unknown) => void;
  reject: (err: unknown) => void;
}

interface LineWaiter {
  resolve: (line: string) => void;
  reject: (err: unknown) => void;
}

/** Default cap on one line (query-qmp-schema, the largest QMP reply, is well under 1 MiB). */
export const DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024;

/** The generic runner; subclasses speak a protocol over it. */
export abstract class LineProtocol {
  #state: RunnerState = 'idle';
  #socket: Socket | undefined;
  #path = '';
  #chunks: Buffer[] = [];
  #partialBytes = 0;
  #early: string[] = [];
  #lineWaiter: LineWaiter | undefined;
  #readerRunning = false;
  #closedBy: DomainError | undefined;
  #pending = new Map<string, Pending>();
  #closed: Promise<void> = Promise.resolve();
  #markClosed: () => void = () => undefined;
  readonly maxLineBytes: number;

  constructor(opts: LineProtocolOptions = {}) {
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** The connection state. */
  get state(): RunnerState {
    return this.#state;
  }

  /** The socket path of the current (or last) connection. */
  get path(): string {
    return this.#path;
  }

  /** Why the last connection ended (undefined while it is up). */
  get closedBy(): DomainError | undefined {
    return this.#closedBy;
  }

  /** Resolves when the current connection has closed (at once when idle). */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Connect to `path`, establish the session, then start the reader loop. */
  async connect(path: string, opts: { signal: AbortSignal }): Promise<void> {
    if (this.#state !== 'idle') throw new InterruptedError(`${path}: already ${this.#state}`);
    this.#state = 'connecting';
    this.#path = path;
    this.#closedBy = undefined;
    this.#closed = new Promise((resolve) => (this.#markClosed = resolve));
    try {
      await this.#openSocket(path, opts.signal);
      await this.establishSession(opts.signal);
    } catch (err) {
      this.#teardown(err instanceof DomainError ? err : undefined);
      throw err;
    }
    if (this.#closedBy) throw this.#closedBy;
    this.#state = 'running';
    this.#readerRunning = true;
    for (const line of this.#early.splice(0)) this.#dispatch(line);
  }

  /** Close the connection; pending calls fail with InterruptedError. Safe to call in any state. */
  async disconnect(): Promise<void> {
    if (this.#state === 'idle') return;
    this.#teardown(new InterruptedError(`${this.#path}: connection closed by us`));
    await this.#closed;
  }

  /** Subclass: greet and negotiate; reads lines with readLine(), writes with writeLine(). */
  protected abstract establishSession(signal: AbortSignal): Promise<void>;

  /** Subclass: one line from the reader loop; throwing a ProtocolError ends the connection. */
  protected abstract onLine(line: string): void;

  /** Subclass: the connection ended (pending replies are already failed). */
  protected onDisconnect(_reason: DomainError): void {}

  /** The next line, while the session is being established (before the reader loop). */
  protected readLine(signal: AbortSignal): Promise<string> {
    const early = this.#early.shift();
    if (early !== undefined) return Promise.resolve(early);
    if (this.#closedBy) return Promise.reject(this.#closedBy);
    if (signal.aborted) return Promise.reject(abortError(signal, `${this.#path}: reading`));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#lineWaiter = undefined;
        reject(abortError(signal, `${this.#path}: reading`));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#lineWaiter = {
        resolve: (l) => {
          signal.removeEventListener('abort', onAbort);
          resolve(l);
        },
        reject: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
    });
  }

  /** Send one line (a newline is added). */
  protected writeLine(line: string): Promise<void> {
    const socket = this.#socket;
    if (!socket || this.#closedBy) return Promise.reject(this.#closedBy ?? new InterruptedError(`${this.#path}: not connected`));
    return new Promise((resolve, reject) => {
      socket.write(`${line}\n`, (err) => {
        if (err) reject(new InterruptedError(`${this.#path}: write failed: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
  }

  /** Send `line` and wait for the reply the subclass routes to `id` with settle(). */
  protected async request(id: string, line: string, signal: AbortSignal, what: string): Promise<unknown> {
    if (this.#state !== 'running') throw this.#closedBy ?? new InterruptedError(`${what}: not connected (${this.#state})`);
    if (signal.aborted) throw abortError(signal, what);
    let onAbort: (() => void) | undefined;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      onAbort = (): void => {
        this.#pending.delete(id);
        reject(abortError(signal, what));
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    reply.catch(() => undefined); // a failed write below leaves it unawaited
    try {
      await this.writeLine(line);
      return await reply;
    } finally {
      this.#pending.delete(id);
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** Settle the pending request `id`; false when nobody waits for it (late or unknown reply). */
  protected settle(id: string, outcome: { value: unknown } | { error: unknown }): boolean {
    const p = this.#pending.get(id);
    if (!p) return false;
    this.#pending.delete(id);
    if ('error' in outcome) p.reject(outcome.error);
    else p.resolve(outcome.value);
    return true;
  }

  #openSocket(path: string, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(abortError(signal, `${path}: connecting`));
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path });
      this.#socket = socket;
      let connected = false;
      const onAbort = (): void => {
        socket.destroy();
        reject(abortError(signal, `${path}: connecting`));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => {
        connected = true;
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (!connected) {
          signal.removeEventListener('abort', onAbort);
          const e = new NotReachableError(`${path}: cannot connect (${err.code ?? err.message})`, { cause: err });
          this.#teardown(e);
          reject(e);
          return;
        }
        this.#teardown(new InterruptedError(`${path}: connection lost (${err.message})`, { cause: err }));
      });
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
      socket.on('close', () => this.#teardown(new InterruptedError(`${path}: connection closed by the peer`)));
    });
  }

  #onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (this.#partialBytes + piece.length > this.maxLineBytes) return this.#oversized();
      this.#chunks.push(piece);
      const line = Buffer.concat(this.#chunks).toString('utf8');
      this.#chunks = [];
      this.#partialBytes = 0;
      start = nl + 1;
      this.#deliver(line.endsWith('\r') ? line.slice(0, -1) : line);
      if (this.#closedBy) return;
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0) return;
    this.#partialBytes += rest.length;
    if (this.#partialBytes > this.maxLineBytes) return this.#oversized();
    this.#chunks.push(Buffer.from(rest));
  }

  #oversized(): void {
    this.#teardown(new ProtocolError(`${this.#path}: a line longer than ${this.maxLineBytes} bytes`));
  }

  #deliver(line: string): void {
    if (line.trim() === '') return;
    if (this.#readerRunning) return this.#dispatch(line);
    const w = this.#lineWaiter;
    if (w) {
      this.#lineWaiter = undefined;
      w.resolve(line);
    } else {
      this.#early.push(line);
    }
  }

  #dispatch(line: string): void {
    if (this.#closedBy) return;
    try {
      this.onLine(line);
    } catch (err) {
      const e = err instanceof ProtocolError ? err : new ProtocolError(`${this.#path}: cannot handle a message: ${String(err)}`, { cause: err });
      this.#teardown(e);
    }
  }

  #teardown(reason: DomainError | undefined): void {
    if (this.#state === 'idle' || this.#state === 'disconnecting') return;
    const why = reason ?? new InterruptedError(`${this.#path}: connection closed`);
    this.#state = 'disconnecting';
    this.#closedBy = why;
    this.#readerRunning = false;
    const socket = this.#socket;
    this.#socket = undefined;
    const w = this.#lineWaiter;
    this.#lineWaiter = undefined;
    w?.reject(why);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(why);
    this.#chunks = [];
    this.#partialBytes = 0;
    this.#early = [];
    try {
      this.onDisconnect(why);
    } finally {
      const done = (): void => {
        this.#state = 'idle';
        this.#markClosed();
      };
      if (socket && !socket.destroyed) {
        socket.once('close', done);
        socket.destroy();
      } else {
        done();
      }
    }
  }
}
