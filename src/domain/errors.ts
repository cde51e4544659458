// The domain-control layer's errors: a small hierarchy that keeps the cause.
// Callers tell the kinds apart with `instanceof` or `code`, never by message.

/** Every error a driver raises derives from this one. */
export class DomainError extends Error {
  readonly code: DomainErrorCode;
  /** The guest the error is about, when there is one. */
  readonly guest: string | undefined;
  constructor(code: DomainErrorCode, message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.guest = opts.guest;
  }
}

export type DomainErrorCode =
  | 'not-found'
  | 'not-reachable'
  | 'refused'
  | 'timed-out'
  | 'interrupted'
  | 'protocol';

/** The guest does not exist (any more) on that connection. */
export class GuestNotFoundError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('not-found', message, opts);
  }
}

/** The daemon or monitor socket does not answer (absent, hung, held by another client). */
export class NotReachableError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('not-reachable', message, opts);
  }
}

/** The hypervisor refused the operation (invalid in this state, unsupported, no space...). */
export class OperationRefusedError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('refused', message, opts);
  }
}

/** The operation's own deadline passed before it finished. */
export class TimedOutError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('timed-out', message, opts);
  }
}

/** The operation was cut off: the caller aborted it, or its connection closed. */
export class InterruptedError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('interrupted', message, opts);
  }
}

/** The peer spoke something that is not the protocol (garbage, oversized or malformed replies). */
export class ProtocolError extends DomainError {
  constructor(message: string, opts: { cause?: unknown; guest?: string } = {}) {
    super('protocol', message, opts);
  }
}

/** True when `err` is a DomainError of the given code. */
export function isDomainError(err: unknown, code?: DomainErrorCode): err is DomainError {
  return err instanceof DomainError && (code === undefined || err.code === code);
}
