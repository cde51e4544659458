// What the user sees while guests are handled: on a terminal, one live line
// per guest (action, save progress in %, seconds) redrawn in place; otherwise
// one plain line per event (rc scripts at boot and shutdown). Every event
// also goes to syslog.
import type { Guest } from '../domain/types.js';
import type { GuestObserver } from '../guests/observer.js';
import type { GuestOutcome } from '../guests/outcome.js';
import type { Log } from '../util/log.js';

/** Where the progress goes. */
export interface ProgressOptions {
  out: NodeJS.WritableStream & { isTTY?: boolean };
  log: Log;
  /** Several connections: names are shown with their URI. */
  showUri?: boolean;
  /** Force the live mode on or off (default: out.isTTY). */
  live?: boolean;
}

interface Line {
  guest: Guest;
  action: string;
  text: string;
  fraction?: number;
  started: number;
  ended?: GuestOutcome;
}

/** A guest's name for people: control characters escaped, quoted when it has spaces or starts with a dash. */
export function guestLabel(guest: Pick<Guest, 'name' | 'uri'>, showUri = false): string {
  // eslint-disable-next-line no-control-regex
  let n = guest.name.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (/\s|^-|^$|'/.test(n)) n = `'${n.replace(/'/g, "'\\''")}'`;
  return showUri ? `${n} (${guest.uri})` : n;
}

/** An observer that draws progress as live lines or plain lines, and logs every event to syslog. */
export function createProgress(opts: ProgressOptions): GuestObserver & { stop(): void } {
  const live = opts.live ?? opts.out.isTTY === true;
  const lines = new Map<string, Line>();
  let drawn = 0;
  let ticker: ReturnType<typeof setInterval> | undefined;
  const label = (g: Guest): string => guestLabel(g, opts.showUri);
  const key = (g: Guest): string => `${g.uri}\u0000${g.id}`;
  const syslog = (msg: string): void => {
    if (opts.log.record) opts.log.record('info', msg);
  };
  const plain = (msg: string): void => {
    opts.log.info(msg);
  };
  const render = (l: Line): string => {
    const secs = (((l.ended ? l.started + l.ended.ms : performance.now()) - l.started) / 1000).toFixed(0).padStart(4);
    const pct = l.fraction !== undefined && !l.ended ? ` ${Math.floor(l.fraction * 100)} %` : '';
    const what = l.ended ? `${l.ended.result}${l.ended.reason ? ` (${l.ended.reason})` : ''}` : `${l.action}${pct}${l.text ? `: ${l.text}` : ''}`;
    return `${secs} s  ${label(l.guest)}  ${what}`;
  };
  const redraw = (): void => {
    if (!live) return;
    let s = drawn > 0 ? `\x1b[${drawn}A` : '';
    for (const l of lines.values()) s += `\r\x1b[2K${render(l)}\n`;
    drawn = lines.size;
    opts.out.write(s);
  };
  const ensureTicker = (): void => {
    if (!live || ticker) return;
    ticker = setInterval(redraw, 1000);
    ticker.unref?.();
  };
  return {
    begin(guest, action) {
      const existing = lines.get(key(guest));
      lines.set(key(guest), { guest, action, text: '', started: existing?.started ?? performance.now() });
      syslog(`${guest.name}: ${action}`);
      if (live) {
        ensureTicker();
        redraw();
      } else plain(`${label(guest)}: ${action}`);
    },
    step(guest, action, text) {
      const l = lines.get(key(guest));
      if (l) {
        l.action = action;
        l.text = text;
        l.fraction = undefined;
      }
      syslog(`${guest.name}: ${text}`);
      if (live) redraw();
      else plain(`${label(guest)}: ${text}`);
    },
    progress(guest, fraction) {
      const l = lines.get(key(guest));
      if (!l) return;
      const before = Math.floor((l.fraction ?? 0) * 4);
      l.fraction = fraction;
      if (live) redraw();
      else if (Math.floor(fraction * 4) > before && fraction < 1) plain(`${label(guest)}: ${l.action} ${Math.floor(fraction * 100)} %`);
    },
    end(outcome) {
      const k = key(outcome.guest);
      const l = lines.get(k) ?? { guest: outcome.guest, action: outcome.action, text: '', started: performance.now() - outcome.ms };
      l.ended = outcome;
      lines.set(k, l);
      const msg = `${outcome.result}${outcome.reason ? `: ${outcome.reason}` : ''} (${(outcome.ms / 1000).toFixed(1)} s)`;
      syslog(`${outcome.guest.name}: ${outcome.action} ${msg}`);
      if (live) redraw();
      else plain(`${label(outcome.guest)}: ${msg}`);
    },
    note(text) {
      syslog(text);
      if (live) {
        // Below the live block, which stays as it is; guests still at work are drawn again under the note.
        opts.out.write(`${text}\n`);
        drawn = 0;
        for (const [k, l] of lines) if (l.ended) lines.delete(k);
        redraw();
      } else plain(text);
    },
    stop() {
      if (ticker) clearInterval(ticker);
      ticker = undefined;
      redraw();
    },
  };
}
