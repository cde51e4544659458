// A QMP client over a unix socket, on top of the generic line runner: it adds
// only the greeting, `qmp_capabilities`, reply routing by id and event listeners.
// QMP spec (docs/interop/qmp-spec): the server greets first; every command
// before `qmp_capabilities` fails with CommandNotFound; replies carry the id of
// their command; events may arrive at any time, also before that reply.
import { NotReachableError, OperationRefusedError, ProtocolError, type DomainError } from '../domain/errors.js';
import { isDeadlineReason } from './abort.js';
import { LineProtocol, type LineProtocolOptions } from './line-protocol.js';
import { EventQueue, toQmpEvent, type QmpEvent, type QmpEventListener } from './qmp-events.js';

/** The server's greeting: `{"QMP": {"version": ..., "capabilities": [...]}}`. */
export interface QmpGreeting {
  version?: { qemu?: { major: number; minor: number; micro: number }; package?: string };
  capabilities: string[];
}

/** QEMU refused a command: its error reply's class and description. */
export class QmpCommandError extends OperationRefusedError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
    opts: { guest?: string } = {},
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`, opts);
  }
}

/** Options of a QMP client. */
export interface QmpClientOptions extends LineProtocolOptions {
  /** Prefix of command ids (ids are PREFIX-N). */
  idPrefix?: string;
  /** The guest this monitor belongs to, named in errors. */
  guest?: string;
}

/** A QMP connection: connect(), execute(), listen(), close(). */
export class QmpClient extends LineProtocol {
  #greeting: QmpGreeting | undefined;
  #nextId = 1;
  readonly #idPrefix: string;
  readonly #guest: string | undefined;
  readonly #listeners = new Set<EventQueue>();
  readonly #callbacks = new Set<(e: QmpEvent) => void>();
  readonly #commands = new Map<string, string>();

  constructor(opts: QmpClientOptions = {}) {
    super(opts);
    this.#idPrefix = opts.idPrefix ?? 'rcl';
    this.#guest = opts.guest;
  }

  /** The greeting of the current connection. */
  get greeting(): QmpGreeting | undefined {
    return this.#greeting;
  }

  /** Run `command` and resolve with its `return` value; a QMP error reply rejects with QmpCommandError. */
  async execute<T = unknown>(command: string, args: Record<string, unknown> | undefined, opts: { signal: AbortSignal }): Promise<T> {
    const id = `${this.#idPrefix}-${this.#nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg['arguments'] = args;
    this.#commands.set(id, command);
    try {
      return (await this.request(id, JSON.stringify(msg), opts.signal, `${this.path}: QMP ${command}`)) as T;
    } finally {
      this.#commands.delete(id);
    }
  }

  /** Subscribe to events by name (`*` for all), before running the command that causes them. */
  listen(names: string | readonly string[]): QmpEventListener {
    const list = typeof names === 'string' ? [names] : [...names];
    const l = new EventQueue(list, (x) => this.#listeners.delete(x));
    const ended = this.closedBy;
    if (this.state !== 'running' && ended) l.end(ended);
    else this.#listeners.add(l);
    return l;
  }

  /** Call `cb` with every event; returns the unsubscribe function. */
  onEvent(cb: (e: QmpEvent) => void): () => void {
    this.#callbacks.add(cb);
    return () => this.#callbacks.delete(cb);
  }

  /** Close the connection (pending calls fail with InterruptedError). */
  close(): Promise<void> {
    return this.disconnect();
  }

  protected override async establishSession(signal: AbortSignal): Promise<void> {
    let first: string;
    try {
      first = await this.readLine(signal);
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      if (signal.aborted && !isDeadlineReason(signal.reason)) throw err;
      throw new NotReachableError(
        `${this.path}: connected, but QEMU sent no QMP greeting (${signal.aborted ? 'within the deadline' : 'the connection closed'}; another client such as libvirtd may hold this monitor)`,
        this.#errOpts(err),
      );
    }
    const greeting = this.#parse(first)['QMP'];
    if (greeting === null || typeof greeting !== 'object' || Array.isArray(greeting)) {
      throw new ProtocolError(`${this.path}: the first message is not a QMP greeting: ${clip(first)}`, this.#errOpts());
    }
    const g = greeting as Record<string, unknown>;
    this.#greeting = { ...(g as object), capabilities: Array.isArray(g['capabilities']) ? g['capabilities'].map(String) : [] } as QmpGreeting;
    const id = `${this.#idPrefix}-capabilities`;
    await this.writeLine(JSON.stringify({ execute: 'qmp_capabilities', id }));
    for (;;) {
      const msg = this.#parse(await this.readLine(signal));
      if (typeof msg['event'] === 'string') continue;
      if (msg['id'] !== id) throw new ProtocolError(`${this.path}: unexpected reply during negotiation: ${clip(JSON.stringify(msg))}`, this.#errOpts());
      const error = msg['error'];
      if (error !== undefined) {
        const e = replyError('qmp_capabilities', error, this.#guest);
        throw new ProtocolError(`${this.path}: capabilities negotiation refused: ${e.message}`, this.#errOpts(e));
      }
      return;
    }
  }

  protected override onLine(line: string): void {
    const msg = this.#parse(line);
    if (typeof msg['event'] === 'string') {
      const e = toQmpEvent(msg, performance.now());
      for (const l of this.#listeners) if (l.hears(e.event)) l.push(e);
      for (const cb of this.#callbacks) {
        try {
          cb(e);
        } catch {
          /* a callback's failure is its own */
        }
      }
      return;
    }
    const id = msg['id'];
    const hasReturn = 'return' in msg;
    const error = msg['error'];
    if (typeof id !== 'string' || (!hasReturn && error === undefined)) {
      throw new ProtocolError(`${this.path}: a message that is neither a reply nor an event: ${clip(line)}`, this.#errOpts());
    }
    const command = this.#commands.get(id) ?? id;
    if (error !== undefined) this.settle(id, { error: replyError(command, error, this.#guest) });
    else this.settle(id, { value: msg['return'] });
  }

  protected override onDisconnect(reason: DomainError): void {
    for (const l of [...this.#listeners]) l.end(reason);
    this.#listeners.clear();
  }

  #parse(line: string): Record<string, unknown> {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch (err) {
      throw new ProtocolError(`${this.path}: not JSON: ${clip(line)}`, this.#errOpts(err));
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      throw new ProtocolError(`${this.path}: not a JSON object: ${clip(line)}`, this.#errOpts());
    }
    return msg as Record<string, unknown>;
  }

  #errOpts(cause?: unknown): { cause?: unknown; guest?: string } {
    const o: { cause?: unknown; guest?: string } = {};
    if (cause !== undefined) o.cause = cause;
    if (this.#guest !== undefined) o.guest = this.#guest;
    return o;
  }
}

function replyError(command: string, error: unknown, guest: string | undefined): QmpCommandError {
  const e = (error ?? {}) as { class?: unknown; desc?: unknown };
  return new QmpCommandError(command, String(e.class ?? 'GenericError'), String(e.desc ?? 'no description'), guest === undefined ? {} : { guest });
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/** A connected client (greeting and negotiation done). */
export async function connectQmp(path: string, opts: QmpClientOptions & { signal: AbortSignal }): Promise<QmpClient> {
  const client = new QmpClient(opts);
  await client.connect(path, { signal: opts.signal });
  return client;
}

/** Connect, run `body`, and close the connection whatever happens. */
export async function withQmp<T>(path: string, opts: QmpClientOptions & { signal: AbortSignal }, body: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const client = await connectQmp(path, opts);
  try {
    return await body(client);
  } finally {
    await client.close();
  }
}
