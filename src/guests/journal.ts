// The journal: what stop did to each guest and its state before, by
// connection, id and name, so that start brings back exactly those guests.
// Written atomically (temp file, fsync, rename, fsync of the directory);
// validated on read; a damaged journal is kept aside, not lost.
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../util/error-message.js';

/** What stop did to a guest (only guests that are down are journaled). */
export type JournalAction = 'saved' | 'shutdown' | 'destroyed';

/** One guest waiting to come back. */
export interface JournalEntry {
  uri: string;
  id: string;
  name: string;
  action: JournalAction;
  /** Its state before stop: it comes back in it. */
  stateBefore: 'running' | 'paused';
  /** Its order group at stop (start goes ascending). */
  order: number;
  /** When stop handled it (ISO 8601). */
  at: string;
}

/** The journal file's name under the state directory. */
export const JOURNAL_FILE = 'journal.json';

const ACTIONS: readonly JournalAction[] = ['saved', 'shutdown', 'destroyed'];

/** What reading the journal found. */
export interface JournalRead {
  entries: JournalEntry[];
  /** Set when the file was damaged: what was wrong, and where it was kept. */
  damaged?: string;
}

/** Read and validate the journal; a damaged one is moved aside (`journal.json.damaged-TIME`, unless `keepDamaged`) and reported. */
export async function readJournal(stateDir: string, opts: { keepDamaged?: boolean } = {}): Promise<JournalRead> {
  const path = join(stateDir, JOURNAL_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [] };
    throw new Error(`journal ${path}: cannot read: ${errorMessage(err)}`, { cause: err });
  }
  try {
    return { entries: parseJournal(text) };
  } catch (err) {
    if (opts.keepDamaged) return { entries: [], damaged: `journal ${path} is damaged (${errorMessage(err)})` };
    const aside = `${path}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    let kept = `kept as ${aside}`;
    try {
      await rename(path, aside);
    } catch (e) {
      kept = `could not be moved aside: ${errorMessage(e)}`;
    }
    return { entries: [], damaged: `journal ${path} is damaged (${errorMessage(err)}); ${kept}` };
  }
}

/** Parse and validate a journal's text; throws naming what is wrong and where. */
export function parseJournal(text: string): JournalEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${errorMessage(err)}`);
  }
  if (!isObject(data) || data.version !== 1 || !Array.isArray(data.entries)) {
    throw new Error('expected {"version": 1, "entries": [...]}');
  }
  return data.entries.map((e: unknown, i: number) => {
    const where = `entry ${i}`;
    if (!isObject(e)) throw new Error(`${where}: not an object`);
    for (const k of ['uri', 'id', 'name', 'at'] as const) {
      if (typeof e[k] !== 'string' || (k !== 'name' && e[k] === '')) throw new Error(`${where}: "${k}" must be a non-empty string`);
    }
    if (!ACTIONS.includes(e.action as JournalAction)) throw new Error(`${where}: "action" must be one of ${ACTIONS.join(', ')}`);
    if (e.stateBefore !== 'running' && e.stateBefore !== 'paused') throw new Error(`${where}: "stateBefore" must be running or paused`);
    if (typeof e.order !== 'number' || !Number.isInteger(e.order)) throw new Error(`${where}: "order" must be an integer`);
    return {
      uri: e.uri as string,
      id: e.id as string,
      name: e.name as string,
      action: e.action as JournalAction,
      stateBefore: e.stateBefore,
      order: e.order,
      at: e.at as string,
    };
  });
}

/** The journal of one run: entries are added and cleared one by one, each change written at once. */
export interface Journal {
  /** The entries as they stand. */
  entries(): JournalEntry[];
  /** Add (or replace) a guest's entry and write the journal. */
  record(entry: JournalEntry): Promise<void>;
  /** Remove a guest's entry and write the journal. */
  clear(uri: string, id: string): Promise<void>;
}

/** Open the journal under `stateDir` for changes, starting from `initial` (what readJournal found). */
export function openJournal(stateDir: string, initial: JournalEntry[]): Journal {
  let entries = [...initial];
  let chain: Promise<void> = Promise.resolve();
  const write = (): Promise<void> => {
    const snapshot = entries.map((e) => ({ ...e }));
    const next = chain.then(() => writeJournal(stateDir, snapshot));
    chain = next.catch(() => undefined);
    return next;
  };
  return {
    entries: () => entries.map((e) => ({ ...e })),
    record: (entry) => {
      entries = [...entries.filter((e) => !(e.uri === entry.uri && e.id === entry.id)), entry];
      return write();
    },
    clear: (uri, id) => {
      const before = entries.length;
      entries = entries.filter((e) => !(e.uri === uri && e.id === id));
      return entries.length === before ? chain : write();
    },
  };
}

/** Write the journal atomically: temp file, fsync, rename over, fsync the directory. */
export async function writeJournal(stateDir: string, entries: JournalEntry[]): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, JOURNAL_FILE);
  const tmp = `${path}.tmp-${process.pid}`;
  const body = `${JSON.stringify({ version: 1, entries }, null, 2)}\n`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(body, 'utf8');
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw new Error(`journal ${tmp}: cannot write: ${errorMessage(err)}`, { cause: err });
  }
  await fh.close();
  await rename(tmp, path);
  const dir = await open(stateDir, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
