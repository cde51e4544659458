// Turning an aborted signal into the domain error a caller expects: a passed
// deadline is "timed out", anything else is "interrupted"; a DomainError given
// as the reason is passed through unwrapped.
import { DeadlineError } from '../util/deadline.js';
import { DomainError, InterruptedError, TimedOutError } from '../domain/errors.js';

/** True when an abort reason says a deadline passed (ours, AbortSignal.timeout's, or a TimedOutError). */
export function isDeadlineReason(reason: unknown): boolean {
  return (
    reason instanceof DeadlineError ||
    reason instanceof TimedOutError ||
    (reason instanceof Error && reason.name === 'TimeoutError')
  );
}

/** The error to reject with when `signal` aborted while doing `what`. */
export function abortError(signal: AbortSignal, what: string, guest?: string): DomainError {
  const reason: unknown = signal.reason;
  if (reason instanceof DomainError) return reason;
  const opts = guest === undefined ? { cause: reason } : { cause: reason, guest };
  if (isDeadlineReason(reason)) return new TimedOutError(`${what}: ${describeReason(reason)}`, opts);
  return new InterruptedError(`${what}: interrupted${reason instanceof Error ? ` (${reason.message})` : ''}`, opts);
}

function describeReason(reason: unknown): string {
  return reason instanceof Error ? reason.message : 'deadline passed';
}
