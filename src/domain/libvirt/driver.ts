// The libvirt driver: the DomainDriver contract over virsh (one URI), guests
// addressed by UUID as `--domain=UUID`, waits fed by the lifecycle event stream.
import pLimit from 'p-limit';
import { InterruptedError, OperationRefusedError, ProtocolError, isDomainError } from '../errors.js';
import type { DomainDriver, Guest, GuestFact, GuestState, LifecycleEvent, ListOptions, OpOptions, SaveOptions, StartOptions, WaitOptions } from '../types.js';
import type { Log } from '../../util/log.js';
import { errorMessage } from '../../util/error-message.js';
import { randomHex } from '../../util/random-hex.js';
import { anySignal, deadline, formatMs, now } from '../../util/deadline.js';
import { DOMAIN_FACTS_XPATH, createDomainXmlReader, type DomainXmlFacts } from './domain-xml.js';
import { createEventStream, type StreamEvent } from './events.js';
import { readGuestHints } from './guest-hints.js';
import { createSectionReader, isUuid, parseDominfo, parseDomstate, parseUuidList, toGuestState, type DomInfo } from './parse.js';
import { saveGuest, stateAsSaveBegan } from './save.js';
import { createVirsh, runFollowedBy, type Virsh, type VirshCall } from './virsh.js';
import { waitForGuestState, type WaitStats } from './waits.js';

/** Options of createLibvirtDriver. */
export interface LibvirtDriverOptions {
  uri: string;
  /** The virsh program (default `virsh`). */
  virsh?: string;
  /** Deadline of one quick virsh call (ms); a daemon that does not answer in time is "not reachable". */
  callTimeoutMs?: number;
  /** A long call (save, start, destroy) fails "not reachable" only when no `virsh version` answered for this long (ms; default the virsh runner's WATCHDOG_WINDOW_MS, 20 s). */
  hungWindowMs?: number;
  /** Deadline of a save, a start (restore) or a destroy (ms). */
  longCallTimeoutMs?: number;
  /** Where managedsave images go (default libvirt's for qemu:///system). */
  saveDirectory?: string;
  /** How long describing one guest may take (ms, default DESCRIBE_TIMEOUT_MS). */
  describeTimeoutMs?: number;
  /** Deadline of one virsh process describing many guests in a listing (ms, default batchTimeoutMs(guests)). */
  batchTimeoutMs?: number;
  /** Folders of libvirt's XML files whose guests the listing describes along with its list (guest-hints.ts; default none; qemu:///system: hintDirsFor). */
  hintDirs?: readonly string[];
  /** Poll interval of waits while the event stream is dead (ms, default 500). */
  pollMs?: number;
  /** Poll interval of waits while the event stream runs, in case it is silent (ms, default 5000). */
  safetyPollMs?: number;
  log?: Log;
}

/** The libvirt driver, with libvirt's extras. */
export interface LibvirtDriver extends DomainDriver {
  readonly kind: 'libvirt';
  /** How waits ended (event, poll, immediate): tests assert the mechanism with it. */
  readonly waitStats: WaitStats;
  /** The lifecycle event stream runs. */
  readonly eventsAlive: boolean;
  /** Resolves when libvirtd answers (`virsh version`); NotReachableError when it does not within the call deadline. */
  ping(opts: OpOptions & { timeoutMs?: number }): Promise<void>;
  /** Wake a guest from ACPI S3 (`virsh dompmwakeup`). */
  wake(id: string, opts: OpOptions): Promise<void>;
  /** Resume a paused guest (`virsh resume`). */
  resume(id: string, opts: OpOptions): Promise<void>;
  /** Names of the active virtual networks. */
  listActiveNetworks(opts: OpOptions): Promise<string[]>;
  /** Stop an active virtual network. */
  destroyNetwork(name: string, opts: OpOptions): Promise<void>;
}

const DEFAULT_SAVE_DIR = '/var/lib/libvirt/qemu/save';
// Guests described one by one at once (outside a batch): 16 × 4 virsh calls keep libvirtd busy without flooding it.
const LIST_CONCURRENCY = 16;
/** How long describing one guest on its own may take (its four calls, asked at once); what has not answered by then is left at its safe default. */
export const DESCRIBE_TIMEOUT_MS = 15_000;
/**
 * Guests per batch virsh process: its command string (about 550 bytes a
 * guest) stays far below the 128 KiB limit of one argument, and a guest that
 * hangs sends only the guests of its own batch to be asked one by one. With
 * 64 firmware guests on 2 cores, 2 batches of 32 listed in 751 ms (median of
 * 5), 4 of 16 in 872 ms, 1 of 64 in 768 ms.
 */
export const BATCH_GUESTS = 32;
// Batch processes at once: libvirtd answers each connection on its own worker, so batches overlap (and the XML of the first is read while the others run).
const BATCH_CONCURRENCY = 4;

/**
 * Deadline of a batch of `guests`: 2 s for virsh to start and connect, plus
 * 100 ms a guest. A healthy libvirtd answers a guest's calls in a few
 * ms (docs/benchmarks.md), so the deadline passes only when some call hangs
 * (a guest whose QEMU does not answer can hold a call until libvirt's 30 s job
 * timeout); it is short because a hung guest's batch is then asked again
 * guest by guest, each within DESCRIBE_TIMEOUT_MS: 5.2 s + 15 s at most for
 * a full batch, inside the plan's 20 s hung window and 60 s listing deadline.
 */
export function batchTimeoutMs(guests: number): number {
  return 2000 + 100 * guests;
}

/** The four calls that describe a guest, in the order of RawAnswers. */
interface DescribeCall {
  what: string;
  args: (id: string) => string[];
}
const DESCRIBE_CALLS: readonly DescribeCall[] = [
  // name, persistence, autostart, managed save, maximum memory
  { what: 'dominfo', args: (id) => ['dominfo', `--domain=${id}`] },
  // state and its reason
  { what: 'domstate', args: (id) => ['domstate', '--reason', `--domain=${id}`] },
  // memory and save blockers of the running configuration
  { what: 'dumpxml', args: (id) => ['dumpxml', `--domain=${id}`] },
  // the policy (set with `virsh metadata --config`)
  { what: 'dumpxml --inactive', args: (id) => ['dumpxml', '--inactive', `--domain=${id}`] },
];
/** The calls of a guest in a batch: DESCRIBE_CALLS but dominfo, whose facts the listing's lists give (LIST_FACTS). */
const BATCH_CALLS: readonly DescribeCall[] = DESCRIBE_CALLS.slice(1);
/** What a guest's BATCH_CALLS printed (none empty), and whether the XML is `--xpath` selected. */
interface BatchAnswers {
  state: string;
  live: string;
  config: string;
  selected: boolean;
}
/** What each of DESCRIBE_CALLS printed, or why it did not answer. */
type RawAnswers = [Settled<string>, Settled<string>, Settled<string>, Settled<string>];

/**
 * The facts of dominfo that the listing learns for every guest at once, each
 * from a pair of filtered lists (`list --all --uuid --persistent` and
 * `--transient`...): a guest on exactly one list of the pair has the fact; on
 * neither or both (a list failed, or the guest changed between the two) it is
 * not known, and the guest is asked on its own (dominfo).
 */
const LIST_FACTS = [
  { fact: 'persistent', yes: '--persistent', no: '--transient' },
  { fact: 'autostart', yes: '--autostart', no: '--no-autostart' },
  { fact: 'managedSave', yes: '--with-managed-save', no: '--without-managed-save' },
] as const;
/** What the listing's lists say of one guest. */
type ListedFacts = { [K in (typeof LIST_FACTS)[number]['fact']]: boolean };
/** The list calls at the head of the listing's first batch: all guests, then each pair of LIST_FACTS. */
const LIST_CALLS: readonly string[] = ['list --all --uuid', ...LIST_FACTS.flatMap((f) => [`list --all --uuid ${f.yes}`, `list --all --uuid ${f.no}`])];

/** Each guest's ListedFacts, for the guests whose every fact the lists tell; `outs` are LIST_CALLS's outputs after the first. */
function listedFacts(outs: readonly string[]): Map<string, ListedFacts> {
  const sets = outs.map((out) => {
    try {
      return new Set(parseUuidList(out));
    } catch {
      return new Set<string>(); // not a list: no guest learns the fact from it
    }
  });
  const known = new Map<string, ListedFacts>();
  for (const id of new Set(sets.flatMap((set) => [...set]))) {
    const facts: Partial<ListedFacts> = {};
    let all = true;
    LIST_FACTS.forEach((f, i) => {
      const yes = sets[2 * i]!.has(id);
      if (yes === sets[2 * i + 1]!.has(id)) all = false;
      else facts[f.fact] = yes;
    });
    if (all) known.set(id, facts as ListedFacts);
  }
  return known;
}

/** A guest's DomInfo from the listing's lists and its XML (name, UUID, maximum memory); an error when the XML does not name this guest. */
function infoFromListing(id: string, listed: ListedFacts, xml: DomainXmlFacts | undefined, state: string): Settled<DomInfo> {
  if (!xml || xml.uuid.toLowerCase() !== id.toLowerCase() || !xml.name) {
    return { ok: false, error: new ProtocolError(`the XML of ${id} does not name it (${xml ? `uuid ${xml.uuid}` : 'no XML'})`) };
  }
  return { ok: true, value: { name: xml.name, uuid: id.toLowerCase(), state, maxMemoryKiB: xml.memoryKiB, ...listed } };
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));
}

/** The daemon answered (a result, or a refusal of its own), as opposed to a call killed at its deadline, cut off, or not connected. */
export function answered(err: unknown): boolean {
  return isDomainError(err) && !isDomainError(err, 'not-reachable') && !isDomainError(err, 'interrupted') && !isDomainError(err, 'protocol');
}

function knownState(word: string): boolean {
  try {
    toGuestState(word);
    return true;
  } catch {
    return false;
  }
}

/** A DomainDriver over virsh for one libvirt URI. */
export function createLibvirtDriver(opts: LibvirtDriverOptions): LibvirtDriver {
  const log = opts.log;
  const virsh: Virsh = createVirsh({ uri: opts.uri, virsh: opts.virsh, callTimeoutMs: opts.callTimeoutMs, log, ...(opts.hungWindowMs !== undefined ? { hungWindowMs: opts.hungWindowMs } : {}) });
  const longMs = opts.longCallTimeoutMs ?? 6 * 3600_000;
  const describeMs = opts.describeTimeoutMs ?? DESCRIBE_TIMEOUT_MS;
  const batchMs = (guests: number): number => opts.batchTimeoutMs ?? batchTimeoutMs(guests);
  const lifecycle = createEventStream({ virsh, kind: 'lifecycle', log });
  const reboots = createEventStream({ virsh, kind: 'reboot', log });
  const waitStats: WaitStats = { byEvent: 0, byPoll: 0, immediate: 0 };
  // Names seen for each UUID (events carry names only).
  const names = new Map<string, string>();
  const warned = new Set<string>();
  const dom = (id: string): string => `--domain=${id}`;

  type CallOptions = OpOptions & { guest?: string; timeoutMs?: number; long?: boolean };
  // The deadline and watchdog of a call: a long one (save, start) runs to longMs.
  const callOf = (o: CallOptions): VirshCall => ({
    signal: o.signal,
    guest: o.guest,
    timeoutMs: o.long ? longMs : o.timeoutMs,
    onDeadline: o.long ? 'timed-out' : 'not-reachable',
    // A call that may rightly take long still fails fast when libvirtd stops answering.
    watchdog: o.long === true || (o.timeoutMs ?? 0) > virsh.callTimeoutMs,
  });
  const run = (args: string[], o: CallOptions): Promise<string> => virsh.run(args, callOf(o));

  const domstate = async (id: string, signal: AbortSignal): Promise<{ state: GuestState; detail: string }> =>
    parseDomstate(await run(['domstate', '--reason', dom(id)], { signal, guest: id }), `virsh domstate of ${id}`);

  // Whether this virsh runs a call and a domstate in one process (runFollowedBy); false once it showed it cannot.
  let followedBy = true;
  // Run a call about the guest (a start, a shutdown request); resolves with the guest's state right after, read by the same virsh process (undefined when that read failed, or could not be made).
  const thenState = async (id: string, args: string[], o: OpOptions & { long?: boolean }): Promise<GuestState | undefined> => {
    if (followedBy && isUuid(id)) {
      const r = await runFollowedBy(virsh, args, ['domstate', '--reason', dom(id)], callOf({ ...o, guest: id }));
      if (r !== undefined) {
        if (r.then === undefined) return undefined;
        try {
          return parseDomstate(r.then, `virsh domstate of ${id}`).state;
        } catch {
          return undefined; // the caller asks again, which says what is wrong
        }
      }
      followedBy = false;
      log?.debug(`${opts.uri}: this virsh's echo has no --err: a call and the state after it are asked apart`);
    }
    await run(args, { ...o, guest: id });
    return undefined;
  };

  const nameOf = async (id: string, signal: AbortSignal): Promise<string> => {
    const known = names.get(id);
    if (known !== undefined) return known;
    if (!isUuid(id)) return id;
    const info = parseDominfo(await run(['dominfo', dom(id)], { signal, guest: id }), `virsh dominfo of ${id}`);
    names.set(info.uuid, info.name);
    return info.name;
  };

  // Turn the four answers about a guest (dominfo, domstate, dumpxml, dumpxml
  // --inactive; each its output or why there is none) into a Guest: the one
  // place both the batch and the per-guest calls build it. Whatever did not
  // answer leaves its facts at their safe defaults, named in `undescribed`
  // (docs/libvirt-driver.md, "A guest that cannot be described in time").
  // `tolerant` (the listing) lists the guest even when neither dominfo nor
  // domstate answered; otherwise (getGuest) their failure is thrown.
  // `problem` says why a call gave no answer.
  // `selected`: the XML answers are `dumpxml --xpath DOMAIN_FACTS_XPATH --wrap`'s.
  // `listed`: the batch's guest, whose dominfo facts come from the listing's
  // lists (ListedFacts) and its name, UUID and maximum memory from its XML;
  // raw[0] is then not read.
  const toGuest = (id: string, raw: RawAnswers, tolerant: boolean, problem: (error: unknown) => string, selected = false, listed?: ListedFacts): Guest => {
    const xml = createDomainXmlReader(selected ? 'selected' : 'domain');
    const read = <T>(r: Settled<string>, parse: (out: string) => T): Settled<T> => {
      if (!r.ok) return r;
      try {
        return { ok: true, value: parse(r.value) };
      } catch (error) {
        return { ok: false, error };
      }
    };
    const stR = read(raw[1], (out) => parseDomstate(out, `virsh domstate of ${id}`));
    const liveR = read(raw[2], (out) => xml(out, `dumpxml of ${id}`));
    const configR = read(raw[3], (out) => xml(out, `dumpxml --inactive of ${id}`));
    const infoR: Settled<DomInfo> = listed
      ? infoFromListing(id, listed, configR.ok ? configR.value : liveR.ok ? liveR.value : undefined, stR.ok ? stR.value.detail : 'unknown')
      : read(raw[0], (out) => parseDominfo(out, `virsh dominfo of ${id}`));
    // Gone between the list and its description: not found, as libvirt says.
    for (const r of [infoR, stR]) if (!r.ok && isDomainError(r.error, 'not-found')) throw r.error;
    if (!tolerant) {
      if (!infoR.ok) throw infoR.error;
      if (!stR.ok) throw stR.error;
    }
    const problems: string[] = [];
    const missing = new Set<GuestFact>();
    DESCRIBE_CALLS.forEach((c, i) => {
      const r = [infoR, stR, liveR, configR][i]!;
      if (!r.ok) problems.push(`${c.what}: ${problem(r.error)}`);
    });
    const info = infoR.ok ? infoR.value : undefined;
    const uuid = info?.uuid ?? id.toLowerCase();
    if (info) names.set(info.uuid, info.name);
    else missing.add('identity');
    // The state: domstate, else dominfo's; unknown: 'other' (not saved: shut down first, docs/guests.md).
    let state: GuestState;
    let stateDetail: string;
    if (stR.ok) ({ state, detail: stateDetail } = stR.value);
    else if (info && knownState(info.state)) {
      state = toGuestState(info.state);
      stateDetail = `${info.state} (dominfo)`;
    } else {
      state = 'other';
      stateDetail = 'unknown (no answer about its state)';
      missing.add('state');
    }
    const active = state !== 'shutoff';
    const live = liveR.ok ? liveR.value : undefined;
    const config = configR.ok ? configR.value : undefined;
    // Persistence unknown counts as persistent: the save is tried (libvirt refuses it for a transient guest, and the ladder shuts it down).
    const persistent = info?.persistent ?? true;
    const policySource = persistent ? config ?? live : live ?? config;
    if (!policySource) missing.add('policy');
    for (const p of policySource?.policyProblems ?? []) {
      if (!warned.has(p)) log?.warn(p);
      warned.add(p);
    }
    const blockerSource = active ? live ?? config : config ?? live;
    if (!blockerSource) missing.add('saveBlockers');
    const saveBlockers = [...(blockerSource?.saveBlockers ?? [])];
    if (info && !info.persistent) saveBlockers.push('transient guest: libvirt keeps no managed save image of a guest it does not define');
    const memoryKiB = (active ? live ?? config : config ?? live)?.memoryKiB ?? info?.maxMemoryKiB;
    if (memoryKiB === undefined) missing.add('memory');
    if (!tolerant && !live && !config && !active && !persistent) {
      throw new OperationRefusedError(`guest ${info?.name ?? id} (${uuid}) is neither active nor persistent`, { guest: id });
    }
    const guest: Guest = {
      id: uuid,
      name: info?.name ?? policySource?.name ?? uuid,
      uri: opts.uri,
      state,
      stateDetail,
      memoryKiB: memoryKiB ?? 0,
      persistent,
      autostart: info?.autostart ?? false,
      hasSavedImage: info?.managedSave ?? false,
      policy: policySource?.policy ?? {},
      saveBlockers,
    };
    if (missing.size > 0 || problems.length > 0) guest.undescribed = { missing: [...missing], problems };
    return guest;
  };

  // One guest described by its own four virsh calls, asked at once within one
  // deadline (describeMs): a call that has not answered by then is killed.
  const describe = async (id: string, o: ListOptions, tolerant: boolean): Promise<Guest> => {
    const dl = deadline(describeMs, o.signal);
    const ask = (c: DescribeCall): Promise<Settled<string>> =>
      // The guest's deadline ends the call (its own, a second later, never comes first).
      settle(run(c.args(id), { signal: dl.signal, guest: id, timeoutMs: describeMs + 1000 }).then(
        (out) => {
          o.onAnswer?.(`${c.what} of ${id}`);
          return out;
        },
        (err: unknown) => {
          if (answered(err)) o.onAnswer?.(`${c.what} of ${id} (${errorMessage(err)})`);
          throw err;
        },
      ));
    let raw;
    try {
      raw = (await Promise.all(DESCRIBE_CALLS.map(ask))) as RawAnswers;
    } finally {
      dl.clear();
    }
    if (o.signal.aborted) throw new InterruptedError(`describing guest ${id}: interrupted`, { cause: o.signal.reason, guest: id });
    return toGuest(id, raw, tolerant, (err) =>
      dl.signal.aborted && isDomainError(err, 'interrupted') ? `no answer within ${formatMs(describeMs)}` : errorMessage(err));
  };

  // A virsh older than `dumpxml --xpath` (an older libvirt) refuses the option:
  // its dumpxml sections are empty, so those guests are asked on their own,
  // and the batches after it ask for the whole XML (said once).
  let xpath = true;
  const watchForNoXpath = (): ((chunk: string) => void) => {
    let tail = '';
    return (chunk) => {
      tail = (tail + chunk).slice(-200);
      if (!xpath || !/doesn't support option --xpath/.test(tail)) return;
      xpath = false;
      log?.info(`${opts.uri}: this virsh has no dumpxml --xpath: listings read the whole domain XML`);
    };
  };

  // Many guests described by one virsh process (docs/libvirt-driver.md, "One
  // virsh for the listing"): the three calls of each guest that dominfo is
  // not needed beside (BATCH_CALLS) between `echo` marks, in one command
  // string. `done(id, answers)` is called for each guest as soon as its
  // three sections have arrived: with what they printed when none is empty,
  // else with undefined (the caller asks that guest on its own, so its errors
  // are classified as ever). Guests not reported when this resolves (the
  // batch was cut at its deadline, or failed) were not described.
  //
  // With `onList`, the batch asks LIST_CALLS first: onList is called once,
  // with what they printed, or with undefined when the batch ended before
  // the first of them had answered.
  const describeBatch = async (
    ids: readonly string[],
    o: ListOptions,
    done: (id: string, answers: BatchAnswers | undefined) => void,
    onList?: (outs: string[] | undefined) => void,
  ): Promise<void> => {
    const nonce = randomHex(6);
    const head = onList ? LIST_CALLS.length : 0;
    const per = BATCH_CALLS.length;
    const mark = (i: number): string => `@@rcl-${nonce}-${i}@@`;
    // Only the parts of the XML the facts come from, when this virsh can select them.
    const selected = xpath;
    const args = (c: DescribeCall, id: string): string[] =>
      selected && c.what.startsWith('dumpxml') ? [...c.args(id), '--xpath', DOMAIN_FACTS_XPATH, '--wrap'] : c.args(id);
    const commands = [
      ...(onList ? LIST_CALLS : []).map((c, k) => `echo ${mark(k)}; ${c}`),
      ...ids.flatMap((id, g) => BATCH_CALLS.map((c, k) => `echo ${mark(head + g * per + k)}; ${args(c, id).join(' ')}`)),
    ];
    const line = `${commands.join('; ')}; echo ${mark(head + ids.length * per)}`;
    const lists: string[] = [];
    let told = false;
    const tell = (outs: string[] | undefined): void => {
      if (told || !onList) return;
      told = true;
      onList(outs);
    };
    let answers: string[] = [];
    const read = createSectionReader(mark, (section, text) => {
      if (section < head) {
        lists.push(text);
        if (lists.length === head) tell(lists);
        return;
      }
      const i = section - head;
      const id = ids[Math.floor(i / per)]!;
      const c = BATCH_CALLS[i % per]!;
      // An empty section is a failed call (virsh printed its error on stderr): not counted as an answer, asked again alone.
      const failed = text.trim() === '';
      if (!failed) o.onAnswer?.(`${c.what} of ${id}`);
      answers.push(failed ? '' : text);
      if (answers.length < per) return;
      const [state = '', live = '', config = ''] = answers;
      answers = [];
      done(id, state && live && config ? { state, live, config, selected } : undefined);
    });
    const ms = batchMs(ids.length);
    const t0 = now();
    try {
      await virsh.run([line], { signal: o.signal, timeoutMs: ms, onStdout: read, onStderr: selected ? watchForNoXpath() : undefined });
    } catch (err) {
      if (o.signal.aborted) return;
      const what = `${opts.uri}: the virsh ${ids.length === 0 ? 'listing the guests' : `describing ${ids.length} guest${ids.length === 1 ? '' : 's'} at once`}`;
      const why = now() - t0 >= ms ? `was not done within ${formatMs(ms)} (ended)` : `failed: ${errorMessage(err).split(line).join('…')}`;
      log?.warn(`${what} ${why}; ${ids.length === 0 ? 'the list is asked on its own' : 'the guests it had not described are asked one by one'}`);
    } finally {
      // The lists that arrived, when the first did (the others then count as printing nothing: their facts are not known).
      tell(lists.length > 0 ? [...lists, ...Array<string>(head - lists.length).fill('')] : undefined);
    }
  };

  // A guest of a batch, from its answers and what the listing's lists say of it; undefined when something did not read well (its own calls will say what).
  const fromBatch = (id: string, a: BatchAnswers, listed: ListedFacts): Guest | undefined => {
    const ok = (value: string): Settled<string> => ({ ok: true, value });
    try {
      const guest = toGuest(id, [ok(''), ok(a.state), ok(a.live), ok(a.config)], true, errorMessage, a.selected, listed);
      return guest.undescribed ? undefined : guest;
    } catch {
      return undefined;
    }
  };

  const getGuest = (id: string, o: OpOptions): Promise<Guest> => describe(id, o, false);

  const waitDeps = (id: string) => ({
    stream: lifecycle,
    query: async (signal: AbortSignal) => (await domstate(id, signal)).state,
    pollMs: opts.pollMs ?? 500,
    safetyPollMs: opts.safetyPollMs ?? 5000,
    stats: waitStats,
  });

  // Resolves on the guest's reboot event; rejects when it stops instead, or when the stream dies (then the caller polls).
  const waitForReset = (name: string, signal: AbortSignal): { promise: Promise<void>; cancel: () => void } => {
    const cleanups: (() => void)[] = [];
    const cancel = (): void => {
      for (const c of cleanups.splice(0)) c();
    };
    const promise = new Promise<void>((resolve, reject) => {
      const end = (err?: Error): void => {
        cancel();
        if (err) reject(err);
        else resolve();
      };
      cleanups.push(reboots.subscribe((ev) => ev.name === name && end()));
      cleanups.push(reboots.onDeath(() => end()));
      cleanups.push(lifecycle.subscribe((ev) => {
        if (ev.name === name && ev.event === 'Stopped') end(new OperationRefusedError(`guest ${name} stopped (${ev.detail}) instead of rebooting`, { guest: name }));
      }));
      const onAbort = (): void => end(new InterruptedError(`reboot of ${name}: cut off before the guest was reset`, { cause: signal.reason, guest: name }));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => signal.removeEventListener('abort', onAbort));
    });
    promise.catch(() => undefined);
    return { promise, cancel };
  };

  const waitForState = async (id: string, states: readonly GuestState[], o: WaitOptions): Promise<GuestState> => {
    lifecycle.ensure();
    const name = await nameOf(id, o.signal);
    return waitForGuestState(waitDeps(id), (ev) => ev.name === name, states, o.signal, o.stateNow);
  };

  const driver: LibvirtDriver = {
    kind: 'libvirt',
    uri: opts.uri,
    saveDirectory: opts.saveDirectory ?? DEFAULT_SAVE_DIR,
    waitStats,
    get eventsAlive() {
      return lifecycle.alive;
    },

    async listGuests(o: ListOptions) {
      // The first batch lists the connection (LIST_CALLS) and describes the
      // guests libvirt's files name (guest-hints.ts); the guests on the list
      // they did not name are described once it is known.
      const hints = opts.hintDirs?.length ? readGuestHints(opts.hintDirs) : [];
      // Many calls listen on one signal: one made to take them all (and to end the batches when the listing fails).
      const end = new AbortController();
      const all = anySignal(o.signal, end.signal);
      const lo = { ...o, signal: all.signal };
      const limit = pLimit(LIST_CONCURRENCY);
      const listed = new Map<string, Promise<Guest | undefined>>();
      // A guest the batch did not describe is asked on its own, within its own deadline, many at a time.
      const alone = (id: string): void => {
        if (listed.has(id)) return;
        const p = limit(() => describe(id, lo, true).catch((err: unknown) => {
          if (isDomainError(err, 'not-found')) return undefined; // undefined between list and get
          throw err;
        }));
        p.catch(() => undefined); // awaited below
        listed.set(id, p);
      };
      // What a batch learnt: kept until the lists are known, then used for the guests on the list only (a hint may name a guest libvirtd does not have).
      let onConnection: Set<string> | undefined;
      let facts = new Map<string, ListedFacts>();
      const early: [string, BatchAnswers | undefined][] = [];
      const report = (id: string, answers: BatchAnswers | undefined): void => {
        if (!onConnection) return void early.push([id, answers]);
        if (!onConnection.has(id) || listed.has(id)) return;
        const known = facts.get(id);
        const guest = answers && known ? fromBatch(id, answers, known) : undefined;
        if (guest) listed.set(id, Promise.resolve(guest));
        else alone(id);
      };
      const batches = pLimit(BATCH_CONCURRENCY);
      const work: Promise<void>[] = [];
      const describeInBatches = (ids: readonly string[]): void => {
        for (let i = 0; i < ids.length; i += BATCH_GUESTS) {
          const chunk = ids.slice(i, i + BATCH_GUESTS);
          work.push(batches(() => describeBatch(chunk, lo, report)));
        }
      };
      try {
        const first = hints.slice(0, BATCH_GUESTS);
        const outs = await new Promise<string[] | undefined>((resolve) => {
          work.push(batches(() => describeBatch(first, lo, report, resolve)));
          describeInBatches(hints.slice(BATCH_GUESTS));
        });
        // The list from the first batch; else (it did not list: failed, cut, printed nothing or not UUIDs) on its own.
        let ids: string[] | undefined;
        if (outs !== undefined && outs[0]!.trim() !== '') {
          try {
            ids = parseUuidList(outs[0]!);
          } catch {
            ids = undefined; // asked again on its own, which says what is wrong
          }
        }
        if (outs !== undefined) facts = listedFacts(outs.slice(1));
        ids ??= parseUuidList(await run(['list', '--all', '--uuid'], o));
        o.onAnswer?.('list --all --uuid');
        onConnection = new Set(ids);
        for (const [id, answers] of early.splice(0)) report(id, answers);
        const hinted = new Set(hints);
        describeInBatches(ids.filter((id) => !hinted.has(id)));
        await Promise.all(work);
        for (const id of ids) alone(id);
        const guests = await Promise.all(ids.map((id) => listed.get(id)));
        return guests.filter((g): g is Guest => g !== undefined);
      } finally {
        end.abort(new Error('the listing ended'));
        all.clear();
      }
    },

    getGuest,

    async save(id, o: SaveOptions) {
      // The state to put it back to after a failed save: the caller's, else asked alongside the save
      // (not before it: no virsh call ahead of the save). A guest that is off is refused by managedsave
      // itself. Not cut by the save's signal: an aborted save needs the answer most.
      const known = o.stateBefore;
      const before = (): Promise<GuestState | undefined> =>
        known !== undefined ? Promise.resolve(known) : stateAsSaveBegan(domstate(id, new AbortController().signal));
      await saveGuest({ virsh, id, before, longMs, log, domstate }, o);
    },

    async abort(id, o) {
      try {
        await run(['domjobabort', dom(id)], { ...o, guest: id });
      } catch (err) {
        // No job running: nothing to abort, the guest is as it was.
        if (isDomainError(err, 'refused') && /no job|not running|not active/i.test(err.message)) return;
        throw err;
      }
    },

    async start(id, o: StartOptions) {
      const args = ['start', dom(id)];
      if (o.paused === true) args.push('--paused');
      const after = await thenState(id, args, { ...o, long: true });
      if (o.paused === false && (after ?? (await domstate(id, o.signal)).state) === 'paused') {
        await run(['resume', dom(id)], { ...o, guest: id });
        return undefined;
      }
      return after;
    },

    async shutdown(id, o) {
      // The state read after the request stands for a wait's first query only when no stop can slip by
      // between that read and the wait's own subscription: the guest's events are watched from before the
      // request until it resolves (a wait subscribes in the same turn), and a guest whose name (which
      // events carry) is not known yet gets no state.
      lifecycle.ensure();
      const name = names.get(id);
      if (name === undefined) {
        await run(['shutdown', dom(id)], { ...o, guest: id });
        return undefined;
      }
      let stopped = false;
      const unsubscribe = lifecycle.subscribe((ev) => {
        if (ev.name === name && ev.event === 'Stopped') stopped = true;
      });
      try {
        const after = await thenState(id, ['shutdown', dom(id)], o);
        return stopped ? 'shutoff' : after;
      } finally {
        unsubscribe();
      }
    },

    async resume(id, o) {
      await run(['resume', dom(id)], { ...o, guest: id });
    },

    async wake(id, o) {
      await run(['dompmwakeup', dom(id)], { ...o, guest: id });
    },

    async reboot(id, o) {
      reboots.ensure();
      lifecycle.ensure();
      const name = await nameOf(id, o.signal);
      const streamed = reboots.alive;
      // Listen before asking, so the reset cannot slip by.
      const reset = waitForReset(name, o.signal);
      try {
        await run(['reboot', dom(id)], { ...o, guest: id });
        if (streamed) await reset.promise;
        else log?.warn(`no reboot event stream for ${opts.uri}: ${name} counts as rebooted once it runs`);
      } finally {
        reset.cancel();
      }
      const state = await waitForState(id, ['running', 'shutoff'], o);
      if (state === 'shutoff') throw new OperationRefusedError(`guest ${name} powered off instead of rebooting`, { guest: id });
    },

    async destroy(id, o) {
      try {
        await run(['destroy', dom(id)], { ...o, guest: id, timeoutMs: 120_000 });
      } catch (err) {
        // Already off is what destroy wants.
        if (isDomainError(err, 'refused') && (await domstate(id, o.signal)).state === 'shutoff') return;
        throw err;
      }
    },

    waitForState,

    onLifecycle(listener) {
      lifecycle.ensure();
      return lifecycle.subscribe((ev) => {
        const known = [...names].find(([, n]) => n === ev.name)?.[0];
        const emit = (guestId: string): void => {
          const out: LifecycleEvent = { guestId, name: ev.name, event: ev.event, detail: ev.detail, seenAt: ev.seenAt };
          if (ev.time !== undefined) out.sourceTime = ev.time;
          listener(out);
        };
        if (known) return emit(known);
        const ac = new AbortController();
        run(['domuuid', dom(ev.name)], { signal: ac.signal })
          .then((out) => {
            const uuid = out.trim().toLowerCase();
            names.set(uuid, ev.name);
            emit(uuid);
          })
          .catch(() => emit(ev.name));
      });
    },

    async ping(o) {
      // No watchdog: this call is the question whether libvirtd answers.
      await virsh.run(['version'], { signal: o.signal, timeoutMs: o.timeoutMs });
    },

    async listActiveNetworks(o) {
      const out = await run(['net-list', '--name'], o);
      return out.split('\n').map((l) => l.trim()).filter(Boolean);
    },

    async destroyNetwork(name, o) {
      await run(['net-destroy', `--network=${name}`], { ...o, guest: name });
    },

    async close() {
      await Promise.all([lifecycle.close(), reboots.close()]);
    },
  };
  return driver;
}

