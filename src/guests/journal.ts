// The journal: what stop did to each guest and its state before, by
// connection, id and name, so that start brings back exactly those guests.
// Shared by both drivers and every connection: each entry names its connection.
// Written atomically (a temp file under a random name created O_EXCL|O_NOFOLLOW,
// fsync, rename, fsync of the directory); read without following a symlink;
// validated on read; a damaged or unreadable journal is kept aside, not lost,
// and never keeps guests from being handled.
import { constants } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../util/error-message.js';
import { ownIds } from '../util/own-dir.js';
import { randomHex } from '../util/random-hex.js';

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
  /** Set when the file was damaged or could not be read: what was wrong, and where it was kept. */
  damaged?: string;
}

/** The journal's path under `stateDir`. */
export function journalPath(stateDir: string): string {
  return join(stateDir, JOURNAL_FILE);
}

/**
 * Read and validate the journal, never following a symlink. Never throws: a damaged or
 * unreadable one (a symlink, EACCES, EIO) is moved aside (`journal.json.damaged-TIME` or
 * `.unreadable-TIME`, unless `keepDamaged`) and reported, with no entries.
 */
export async function readJournal(stateDir: string, opts: { keepDamaged?: boolean } = {}): Promise<JournalRead> {
  const path = journalPath(stateDir);
  let text: string;
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { entries: [] };
    const why = code === 'ELOOP' ? 'is a symbolic link: not followed' : `cannot be read (${errorMessage(err)})`;
    return { entries: [], damaged: await keepAside(path, `journal ${path} ${why}`, 'unreadable', opts.keepDamaged) };
  }
  try {
    return { entries: parseJournal(text) };
  } catch (err) {
    return { entries: [], damaged: await keepAside(path, `journal ${path} is damaged (${errorMessage(err)})`, 'damaged', opts.keepDamaged) };
  }
}

// Move a bad journal aside (the link itself, for a symlink: rename never follows one) and say where it went.
async function keepAside(path: string, problem: string, tag: string, keep = false): Promise<string> {
  if (keep) return problem;
  const aside = `${path}.${tag}-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  try {
    await rename(path, aside);
    return `${problem}; kept as ${aside}`;
  } catch (e) {
    return `${problem}; could not be moved aside: ${errorMessage(e)}`;
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

/** Write the journal atomically: a new temp file (random name, O_EXCL|O_NOFOLLOW, 0600), fsync, rename over, fsync the directory. The directory must be a real one of ours, not reachable by others. */
export async function writeJournal(stateDir: string, entries: JournalEntry[]): Promise<void> {
  const path = journalPath(stateDir);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const dir = await openOwnDir(stateDir, path);
  try {
    const tmp = join(stateDir, `.${JOURNAL_FILE}.tmp-${randomHex(8)}`);
    const body = `${JSON.stringify({ version: 1, entries }, null, 2)}\n`;
    let fh;
    try {
      fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw new Error(`journal ${path}: cannot write: ${errorMessage(err)}`, { cause: err });
    }
    try {
      await fh.writeFile(body, 'utf8');
      await fh.sync();
      await fh.close();
      await rename(tmp, path);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw new Error(`journal ${path}: cannot write: ${errorMessage(err)}`, { cause: err });
    }
    await dir.sync();
  } finally {
    await dir.close();
  }
}

// The state directory, opened without following a symlink: refused unless it is a directory of ours that no one else can write.
async function openOwnDir(stateDir: string, path: string) {
  let dir;
  try {
    dir = await open(stateDir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const link = code === 'ELOOP' || code === 'ENOTDIR' ? await lstat(stateDir).then((st) => st.isSymbolicLink(), () => false) : false;
    const why = link ? `${stateDir} is a symbolic link` : code === 'ENOTDIR' ? `${stateDir} is not a directory` : errorMessage(err);
    throw new Error(`journal ${path}: not written: ${why}`, { cause: err });
  }
  const st = await dir.stat();
  if (st.uid !== ownIds().uid || (st.mode & 0o022) !== 0) {
    await dir.close();
    throw new Error(`journal ${path}: not written: ${stateDir} is owner ${st.uid} mode ${(st.mode & 0o7777).toString(8)}, others could change it`);
  }
  return dir;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
