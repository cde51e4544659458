// Parsing virsh's text output (run with LC_ALL=C): dominfo, domstate --reason,
// list --uuid, domjobinfo, managedsave --verbose progress and event lines.
// Anything that does not look like virsh's output is a ProtocolError.
import { ProtocolError } from '../errors.js';
import type { GuestState, SaveProgress } from '../types.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True when `s` is a libvirt UUID. */
export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

/** The UUIDs `virsh -q list --uuid` printed, one a line. */
export function parseUuidList(out: string, what = 'virsh list --uuid'): string[] {
  const ids: string[] = [];
  for (const raw of out.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (!isUuid(line)) throw new ProtocolError(`${what}: not a UUID: ${JSON.stringify(line.slice(0, 80))}`);
    ids.push(line.toLowerCase());
  }
  return ids;
}

/** `Key:   value` lines (dominfo, domjobinfo) as a map; keys lower-cased. */
export function parseKeyValues(out: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    map.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return map;
}

/** What `virsh dominfo` tells about a guest. */
export interface DomInfo {
  name: string;
  uuid: string;
  state: string;
  maxMemoryKiB: number;
  persistent: boolean;
  autostart: boolean;
  managedSave: boolean;
}

/** Parse `virsh dominfo`; a missing or odd field is a ProtocolError naming it. */
export function parseDominfo(out: string, what = 'virsh dominfo'): DomInfo {
  const kv = parseKeyValues(out);
  const field = (key: string): string => {
    const v = kv.get(key);
    if (v === undefined) throw new ProtocolError(`${what}: no "${key}" field in its output: ${JSON.stringify(out.slice(0, 200))}`);
    return v;
  };
  const yesNo = (key: string, yes: string, no: string): boolean => {
    const v = field(key);
    if (v === yes) return true;
    if (v === no) return false;
    throw new ProtocolError(`${what}: "${key}" is ${JSON.stringify(v)} (want ${yes} or ${no})`);
  };
  const uuid = field('uuid');
  if (!isUuid(uuid)) throw new ProtocolError(`${what}: "uuid" is not a UUID: ${JSON.stringify(uuid)}`);
  const mem = /^(\d+) KiB$/.exec(field('max memory'));
  if (!mem) throw new ProtocolError(`${what}: "max memory" is ${JSON.stringify(kv.get('max memory'))} (want N KiB)`);
  return {
    name: field('name'),
    uuid: uuid.toLowerCase(),
    state: field('state'),
    maxMemoryKiB: Number(mem[1]),
    persistent: yesNo('persistent', 'yes', 'no'),
    autostart: yesNo('autostart', 'enable', 'disable'),
    // Older virsh prints "unknown" when it cannot tell.
    managedSave: kv.get('managed save') === 'yes',
  };
}

// virsh's state words (virshDomainStateToString) and what we act on.
const STATES: Record<string, GuestState> = {
  running: 'running',
  idle: 'running',
  blocked: 'running',
  'in shutdown': 'running',
  paused: 'paused',
  'shut off': 'shutoff',
  crashed: 'other',
  pmsuspended: 'suspended',
  'no state': 'other',
};

/** Map a virsh state word (`shut off`, `paused`...) to a GuestState. */
export function toGuestState(word: string): GuestState {
  const s = STATES[word.trim().toLowerCase()];
  if (s === undefined) throw new ProtocolError(`virsh: unknown domain state ${JSON.stringify(word)}`);
  return s;
}

/** Parse `virsh domstate --reason`: `paused (user)` → { state: 'paused', detail: 'paused (user)' }. */
export function parseDomstate(out: string, what = 'virsh domstate --reason'): { state: GuestState; detail: string } {
  const line = out.trim().split('\n')[0]?.trim() ?? '';
  const m = /^([a-z ]+?)(?: \(([^)]*)\))?$/.exec(line);
  if (!m?.[1]) throw new ProtocolError(`${what}: cannot read ${JSON.stringify(line.slice(0, 80))}`);
  try {
    return { state: toGuestState(m[1]), detail: line };
  } catch (err) {
    throw new ProtocolError(`${what}: ${(err as Error).message}`);
  }
}

/** Progress from `virsh domjobinfo` (`Data processed/total`), or undefined when no job runs. */
export function parseJobInfo(out: string): SaveProgress | undefined {
  const kv = parseKeyValues(out);
  const type = kv.get('job type');
  if (type === undefined || type === 'None') return undefined;
  const processed = parseSize(kv.get('data processed'));
  const total = parseSize(kv.get('data total'));
  const remaining = parseSize(kv.get('data remaining'));
  if (total === undefined || total <= 0) return { fraction: 0 };
  const done = processed ?? (remaining === undefined ? 0 : total - remaining);
  return { fraction: Math.min(1, Math.max(0, done / total)), processedBytes: done, totalBytes: total };
}

// virsh prints sizes like `12.345 MiB`.
const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

function parseSize(v: string | undefined): number | undefined {
  const m = v === undefined ? null : /^([\d.]+)\s*([KMGT]iB|B)$/.exec(v);
  if (!m?.[1] || !m[2]) return undefined;
  return Math.round(Number(m[1]) * (UNITS[m[2]] ?? 1));
}

/** Percentages in `managedsave --verbose` output (`Managedsave: [ 30 %]`), in order. */
export function parseVerbosePercents(chunk: string): number[] {
  return [...chunk.matchAll(/\[\s*(\d{1,3}) %\]/g)].map((m) => Number(m[1]));
}

/** One line of `virsh event --timestamp`. */
export interface EventLine {
  /** `lifecycle`, `reboot`... */
  kind: string;
  name: string;
  event: string;
  detail: string;
  /** ms since epoch, when the line carries a timestamp */
  time?: number;
}

// `2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'NAME': Stopped Saved`
// `2026-11-26 22:47:35.695+0000: event 'reboot' for domain 'NAME'`
const EVENT_HEAD = /^(?:(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d{4})?: )?event '([\w-]+)' for domain '/;

/** Parse one event line; names are not escaped, so the name runs up to the last `': ` (or the closing quote at the end). */
export function parseEventLine(line: string): EventLine | undefined {
  const head = EVENT_HEAD.exec(line);
  if (!head?.[4]) return undefined;
  const rest = line.slice(head[0].length);
  let name: string;
  let tail = '';
  const cut = rest.lastIndexOf("': ");
  if (cut >= 0) {
    name = rest.slice(0, cut);
    tail = rest.slice(cut + 3).trim();
  } else if (rest.endsWith("'")) {
    name = rest.slice(0, -1);
  } else {
    return undefined;
  }
  const sp = tail.indexOf(' ');
  const ev: EventLine = {
    kind: head[4],
    name,
    event: sp < 0 ? tail : tail.slice(0, sp),
    detail: sp < 0 ? '' : tail.slice(sp + 1),
  };
  if (head[1] && head[2]) {
    const tz = head[3] ? `${head[3].slice(0, 3)}:${head[3].slice(3)}` : 'Z';
    const t = Date.parse(`${head[1]}T${head[2]}${tz}`);
    if (Number.isFinite(t)) ev.time = t;
  }
  return ev;
}

/**
 * Reads the stdout of one virsh process that ran several commands, each
 * between two `echo MARK` commands (`mark(0)`, `mark(1)`...): calls
 * `onSection(i, text)` with what was printed between mark(i) and mark(i+1)
 * once mark(i+1) has arrived. Under `-q` virsh's echo prints its word with no
 * newline, so marks are found anywhere in the text, never as lines; a failed
 * command prints nothing on stdout (its `error:` goes to stderr), so its
 * section is empty. Feed it stdout chunks in order, as they arrive; text
 * before mark(0), and a section whose closing mark never came, are never
 * reported.
 */
export function createSectionReader(mark: (i: number) => string, onSection: (i: number, text: string) => void): (chunk: string) => void {
  let buf = '';
  let next = 0;
  // buf[0..searched) holds no complete mark(next).
  let searched = 0;
  return (chunk) => {
    buf += chunk;
    for (;;) {
      const m = mark(next);
      const at = buf.indexOf(m, Math.max(0, searched - m.length + 1));
      if (at < 0) {
        searched = buf.length;
        return;
      }
      if (next > 0) onSection(next - 1, buf.slice(0, at));
      buf = buf.slice(at + m.length);
      searched = 0;
      next++;
    }
  };
}
