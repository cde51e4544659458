// The summary after a batch of guests: a table (guest, action, result,
// seconds, reason), a one-line total, the same facts to syslog; the verdict
// itself (clean or not) is guests/outcome's.
import { isBadOutcome, judgeOutcomes, type BatchVerdict, type GuestOutcome } from '../guests/outcome.js';
import { guestLabel } from './guest-progress.js';
import type { Log } from '../util/log.js';

/** Columns laid out with two spaces between them; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** The one-line total: `4 guests in 12.3 s: 2 saved, 1 shutdown, 1 destroyed`. */
export function formatTotal(what: string, outcomes: readonly GuestOutcome[], ms: number): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) counts.set(o.result, (counts.get(o.result) ?? 0) + 1);
  const parts = [...counts].map(([r, n]) => `${n} ${r}`);
  const n = outcomes.length;
  return `${what}: ${n} guest${n === 1 ? '' : 's'} in ${(ms / 1000).toFixed(1)} s${parts.length ? `: ${parts.join(', ')}` : ''}`;
}

/** The summary table and total line. */
export function formatSummary(what: string, outcomes: readonly GuestOutcome[], ms: number, showUri = false): string {
  if (outcomes.length === 0) return `${what}: no guests to act on`;
  const rows = outcomes.map((o) => [guestLabel(o.guest, showUri), o.action, o.result, (o.ms / 1000).toFixed(1), o.reason]);
  return `${formatTable(['GUEST', 'ACTION', 'RESULT', 'SECONDS', 'REASON'], rows)}\n${formatTotal(what, outcomes, ms)}`;
}

/** Print the summary (with `quiet`, only when a guest was destroyed or failed), send it to syslog (one line per guest, then the total), and name destroyed and failed guests. */
export function reportSummary(
  what: string,
  outcomes: readonly GuestOutcome[],
  ms: number,
  out: NodeJS.WritableStream,
  log: Log,
  showUri = false,
  quiet = false,
): BatchVerdict {
  const verdict = judgeOutcomes(outcomes);
  // -q: warnings and errors only; a batch that went as planned has neither (syslog still gets every line).
  if (!quiet || !verdict.clean) out.write(`${formatSummary(what, outcomes, ms, showUri)}\n`);
  for (const o of outcomes) {
    log.record?.(isBadOutcome(o) ? 'warn' : 'info', `${o.guest.name}: ${o.action} ${o.result} in ${(o.ms / 1000).toFixed(1)} s${o.reason ? `: ${o.reason}` : ''}`);
  }
  const { destroyed, failed } = verdict;
  if (destroyed.length) log.warn(`destroyed at the timeout: ${destroyed.map((n) => guestLabel({ name: n, uri: '' })).join(', ')}`);
  if (failed.length) log.warn(`failed: ${failed.map((n) => guestLabel({ name: n, uri: '' })).join(', ')}`);
  log.record?.('notice', formatTotal(what, outcomes, ms));
  return verdict;
}
