// The harness for integration tests that run rc.libvirt as a user would: the
// installed shell script rc/rc.libvirt (through its #! line) with
// RC_LIBVIRT_BUNDLE pointing at dist/rc.libvirt (`npm run build` makes it),
// against the real libvirtd, with a VIRSH wrapper that delays or fails chosen
// calls and logs every call.
//
//   const bed = await openLibvirtBed('rcl-x-', { guests: [{ name: 'rcl x one' }] });
//   bed.virsh.setRules([{ sub: 'dumpxml', guest: bed.guests[0], delayMs: 60_000 }]);
//   const r = await bed.run(['plan'], { TIMEOUT: '30' });
//   const calls = bed.virsh.calls();            // every virsh call, in order
//   await bed.close();                           // in afterAll
//
// openLibvirtBed(prefix, { guests, rules }): holds the host-wide libvirtd lock
//   and starts virtlockd, virtlogd and libvirtd unless they run
//   (test/helpers/daemons.ts), defines and boots the guests
//   (test/helpers/libvirt-guest.ts), makes a temp directory with the wrapper,
//   an empty settings file, run and state directories.
// bed.env(settings): the environment of a run: PATH, RC_LIBVIRT_BUNDLE, and the
//   settings file, run and state directories and VIRSH of the bed (the host's
//   /etc/default/libvirt is never read), plus `settings` (TIMEOUT, URIS...).
// bed.run(args, settings, opts): run `rc/rc.libvirt ARGS` with bed.env(settings);
//   resolves with exit code, signal, stdout and stderr (test/helpers/rc-cli.ts).
// bed.virsh: the wrapper. Rules (first match wins) pick calls by subcommand
//   (`sub`) and optionally guest (`guest`: a bed guest, matched by UUID or
//   name, or the exact `--domain=` value; the program passes UUIDs); a rule
//   picks a batch (the listing's one virsh running many commands, given as
//   one argument separated by `;`) when one of its commands matches, and
//   delays or fails that whole process, as a hung libvirtd answering one
//   guest holds that one connection. E.g.
//   { sub: 'managedsave', guest: bed.guests[0], fail: 'M' } or
//   { sub: 'version', delayMs: 15_000 }; a rule delays the call
//   (`delayMs`) and then runs the real virsh, or fails it (`fail`: the message
//   virsh prints after "error: ", exit 1) after its delay. setRules() replaces
//   them between runs; calls() reads the log: argv, subcommand (`batch` for a
//   listing's batch; a call followed by the state read in its process, as
//   start and shutdown are, by that call), guest, the commands (a batch's
//   each), start and
//   end (epoch ms), exit code, and what the rule did. A call the program killed
//   (its deadline) has no end; nor has an event stream (`virsh event`, exec'd
//   by the wrapper so that the program can end it).
// bed.daemons: which daemons the bed started and which ran already (a test
//   that ends libvirtd, e.g. through `stop`, must have started its own).
// bed.close(): undefines the guests, stops the daemons the bed started (by
//   PID; ones that ran before are left alone), releases the lock, removes the
//   temp directory.
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { holdLibvirtLock, recordTestDaemons, releaseLibvirtLock, startLibvirtDaemons, stopLibvirtDaemons, type DaemonName, type LibvirtDaemons } from './daemons.js';
import { defineLibvirtGuest, removeLibvirtGuests, type LibvirtGuest, type LibvirtGuestOptions } from './libvirt-guest.js';
import { findPidsByComm, identifyPid, isSameProcessAlive, makeTempDir, waitFor, type ProcessIdentity } from './process.js';
import { runVirsh } from './virsh.js';
import { runRc, type CliRun } from './rc-cli.js';
import { repoRoot, requireTestbed } from './testbed.js';

/** The installed shell script, and the bundle it is pointed at. */
export const RC_SCRIPT = join(repoRoot, 'rc', 'rc.libvirt');
export const RC_BUNDLE = join(repoRoot, 'dist', 'rc.libvirt');

/** What the wrapper does to the calls a rule picks. */
export interface VirshRule {
  /** The virsh subcommand, e.g. `dumpxml`, `version`, `managedsave`. */
  sub: string;
  /** Only calls about this guest: a UUID or name as in `--domain=`, or a guest (either matches). */
  guest?: string | { name: string; uuid: string };
  /** Wait this long before running (or failing) the call. */
  delayMs?: number;
  /** Fail the call with `error: MESSAGE` on stderr and exit 1 instead of running it. */
  fail?: string;
}

/** One command of a call: its subcommand and `--domain=` value. */
export interface VirshCommand {
  sub: string;
  guest: string | undefined;
}

/** One call of the wrapper (one virsh process), from its log. */
export interface VirshCall {
  argv: string[];
  /** The subcommand; `batch` for the listing's several commands in one argument; a call followed by the state read in its process is named by that call. */
  sub: string;
  /** The `--domain=` value, when there is one (never for a batch). */
  guest: string | undefined;
  /** Its commands: the one, or each of a batch's in order (`echo` marks included). */
  commands: VirshCommand[];
  startedAt: number;
  /** Undefined while it runs, or when it was killed. */
  endedAt: number | undefined;
  exitCode: number | undefined;
  /** What its rule did: `delayed`, `failed`, `delayed+failed`, or `passed` (no rule). */
  rule: 'passed' | 'delayed' | 'failed' | 'delayed+failed';
}

/** The VIRSH wrapper of a bed. */
export interface VirshWrapper {
  path: string;
  logPath: string;
  setRules(rules: readonly VirshRule[]): void;
  calls(): VirshCall[];
}

const SEP = '\x1f';

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

// The wrapper's rules as a sh function: sets `delay` (seconds) and `fail` for the call.
// `has SUB DOM` / `has_sub SUB`: the call, or one command of a batch, is SUB (about DOM).
function rulesScript(rules: readonly VirshRule[]): string {
  const lines = ['rule() {', '  delay=; fail=; matched='];
  for (const r of rules) {
    let cond = `has_sub ${shQuote(r.sub)}`;
    if (typeof r.guest === 'string') cond = `has ${shQuote(r.sub)} ${shQuote(r.guest)}`;
    else if (r.guest) cond = `{ has ${shQuote(r.sub)} ${shQuote(r.guest.uuid)} || has ${shQuote(r.sub)} ${shQuote(r.guest.name)}; }`;
    const act = [`matched=1`];
    if (r.delayMs) act.push(`delay=${(r.delayMs / 1000).toFixed(3)}`);
    if (r.fail !== undefined) act.push(`fail=${shQuote(r.fail)}`);
    lines.push(`  if [ -z "$matched" ] && ${cond}; then ${act.join('; ')}; fi`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/** Write a VIRSH wrapper around `realVirsh` into `dir`, logging to `dir`/virsh-calls.log. */
export function createVirshWrapper(dir: string, realVirsh: string, rules: readonly VirshRule[] = []): VirshWrapper {
  const path = join(dir, 'virsh-wrapper');
  const logPath = join(dir, 'virsh-calls.log');
  const rulesPath = join(dir, 'virsh-rules.sh');
  writeFileSync(logPath, '');
  const setRules = (r: readonly VirshRule[]): void => writeFileSync(rulesPath, rulesScript(r));
  setRules(rules);
  // The subcommand is the first argument that is not an option (after -c URI);
  // the guest is its --domain= value. A batch (several commands in one
  // argument, separated by `;`) is split into its commands. `cmds` holds one
  // line "SUB DOM" per command, for the rules. Each call logs a start line
  // and, unless killed, an end line, keyed by its pid.
  writeFileSync(
    path,
    `#!/bin/sh
log=${shQuote(logPath)}
sub=; dom=; skip=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    -c|--connect) skip=1 ;;
    --domain=*) [ -z "$dom" ] && dom=\${a#--domain=} ;;
    -*) ;;
    *) [ -z "$sub" ] && sub=$a ;;
  esac
done
nl='
'
command_line() {
  s=; d=
  for w in "$@"; do
    case "$w" in --domain=*) [ -z "$d" ] && d=\${w#--domain=} ;; -*) ;; *) [ -z "$s" ] && s=$w ;; esac
  done
  cmds="$cmds$s $d$nl"
}
cmds=$nl
case "$sub" in
  *';'*)
    rest=$sub
    while [ -n "$rest" ]; do
      one=\${rest%%;*}
      case "$rest" in *';'*) rest=\${rest#*;} ;; *) rest= ;; esac
      set -f; command_line $one; set +f
    done ;;
  *) cmds="$cmds$sub $dom$nl" ;;
esac
has() { case "$cmds" in *"$nl$1 $2$nl"*) return 0 ;; esac; return 1; }
has_sub() { case "$cmds" in *"$nl$1 "*) return 0 ;; esac; return 1; }
. ${shQuote(rulesPath)}
rule
how=passed
[ -n "$delay" ] && how=delayed
[ -n "$fail" ] && how=\${delay:+delayed+}failed
# One write per line: dash's printf writes a long argument apart from what surrounds it, and
# calls that start together (a save and the state read beside it) would interleave their lines.
line=$(printf 'start\\t%s\\t%s\\t%s\\t' "$$" "$(date +%s%3N)" "$how")
for a in "$@"; do line="$line$a${SEP}"; done
printf '%s' "$line$nl" >> "$log"
[ -n "$delay" ] && sleep "$delay"
# An event stream runs until the program ends it: exec, so that ending the wrapper ends virsh too
# (a virsh left behind would hold the program's pipes open, and the program would never exit).
[ "$sub" = event ] && [ -z "$fail" ] && exec ${shQuote(realVirsh)} "$@"
if [ -n "$fail" ]; then
  echo "error: $fail" >&2
  rc=1
else
  ${shQuote(realVirsh)} "$@"
  rc=$?
fi
printf 'end\\t%s\\t%s\\t%s\\n' "$$" "$(date +%s%3N)" "$rc" >> "$log"
exit $rc
`,
  );
  chmodSync(path, 0o755);
  return {
    path,
    logPath,
    setRules,
    calls: () => parseCalls(readFileSync(logPath, 'utf8')),
  };
}

// A command's words: the first that is not an option, and its --domain= value.
function command(words: readonly string[]): VirshCommand {
  return { sub: words.find((w) => !w.startsWith('-')) ?? '', guest: words.find((w) => w.startsWith('--domain='))?.slice('--domain='.length) };
}

function parseCalls(text: string): VirshCall[] {
  const calls: VirshCall[] = [];
  const open = new Map<string, VirshCall>();
  for (const line of text.split('\n')) {
    const f = line.split('\t');
    if (f[0] === 'start' && f.length >= 5) {
      const argv = f[4]!.split(SEP).slice(0, -1);
      const first = argv.find((a, i) => !a.startsWith('-') && argv[i - 1] !== '-c' && argv[i - 1] !== '--connect') ?? '';
      const batch = first.includes(';');
      const commands = batch ? first.split(';').map((c) => command(c.trim().split(/\s+/))) : [command(argv.filter((a, i) => argv[i - 1] !== '-c' && argv[i - 1] !== '--connect'))];
      // A call followed by the state read in its process (`start --domain=X; echo --err M; echo M; domstate ...`) is named by its call; a listing's batch begins with an echo.
      const named = !batch || commands[0]!.sub !== 'echo';
      const call: VirshCall = {
        argv,
        sub: named ? commands[0]!.sub : 'batch',
        guest: named ? commands[0]!.guest : undefined,
        commands,
        startedAt: Number(f[2]),
        endedAt: undefined,
        exitCode: undefined,
        rule: f[3] as VirshCall['rule'],
      };
      calls.push(call);
      open.set(f[1]!, call);
    } else if (f[0] === 'end' && f.length >= 4) {
      const call = open.get(f[1]!);
      if (!call) continue;
      call.endedAt = Number(f[2]);
      call.exitCode = Number(f[3]);
      open.delete(f[1]!);
    }
  }
  return calls;
}

// The environment of a run on a bed: PATH, the bundle, and the bed's settings file, run and state directories and VIRSH.
function bedEnv(dir: string, configFile: string, virsh: VirshWrapper): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    RC_LIBVIRT_BUNDLE: RC_BUNDLE,
    RC_LIBVIRT_CONFIG: configFile,
    RC_LIBVIRT_RUN_DIR: join(dir, 'run'),
    RC_LIBVIRT_STATE_DIR: join(dir, 'state'),
    VIRSH: virsh.path,
  };
}

/** Daemons, guests, a VIRSH wrapper and temp directories for runs of rc/rc.libvirt. */
export interface LibvirtBed {
  dir: string;
  /** The daemons the bed started (stopped at close) and the ones that ran already (left alone). */
  daemons: LibvirtDaemons;
  virsh: VirshWrapper;
  guests: LibvirtGuest[];
  env(settings?: Record<string, string>): NodeJS.ProcessEnv;
  run(args: readonly string[], settings?: Record<string, string>, opts?: { timeoutMs?: number }): Promise<CliRun>;
  close(): Promise<void>;
}

/** Start (or reuse) the daemons, define and boot `guests`, write the wrapper (see the head of this module). */
export async function openLibvirtBed(prefix: string, opts: { guests?: LibvirtGuestOptions[]; rules?: VirshRule[] } = {}): Promise<LibvirtBed> {
  const programs = requireTestbed();
  const dir = await makeTempDir(prefix);
  const virsh = createVirshWrapper(dir, programs.virsh, opts.rules);
  const configFile = join(dir, 'settings');
  writeFileSync(configFile, '# empty: every setting comes from the environment of the run\n');
  let guests: LibvirtGuest[] = [];
  let daemons: LibvirtDaemons = { started: [], reused: [] };
  // Every step runs, whatever an earlier one threw; the first error is thrown at the end.
  const close = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const step of [removeLibvirtGuests, stopLibvirtDaemons, () => rm(dir, { recursive: true, force: true })]) {
      await step().catch((err: unknown) => errors.push(err));
    }
    if (errors.length > 0) throw errors[0];
  };
  try {
    daemons = await startLibvirtDaemons();
    guests = await Promise.all((opts.guests ?? []).map((g) => defineLibvirtGuest(g)));
  } catch (err) {
    await close();
    throw err;
  }
  const env = (settings: Record<string, string> = {}): NodeJS.ProcessEnv => ({ ...bedEnv(dir, configFile, virsh), ...settings });
  return {
    dir,
    daemons,
    virsh,
    guests,
    env,
    run: (args, settings, o = {}) => runRc(args, env(settings), { ...o, program: RC_SCRIPT }),
    close,
  };
}

// ---------------------------------------------------------------------------
// A bed whose daemons rc.libvirt itself starts and stops (`start`, `stop`...),
// across simulated reboots: for the end-to-end tests.
//
//   const bed = await openRcDaemonsBed('rcl-e2e-');   // lock held, no daemon runs
//   await bed.run(['start']);                          // rc.libvirt starts the three
//   const g = await defineLibvirtGuest({ name: 'x' }); // guests need libvirtd up
//   await bed.run(['stop']);
//   bed.simulateReboot();                              // what a reboot empties
//   await bed.close();                                 // in afterAll
//
// The daemons' pidfiles are test-private (DIR/pid/NAME.pid through
// LIBVIRTD_OPTS, VIRTLOGD_OPTS, VIRTLOCKD_OPTS; the host's config files).
// Their sockets stay libvirt's own (/run/libvirt/*-sock: virsh and libvirtd
// find each other only there); with the host-wide lock held and no other
// libvirt daemon running (openRcDaemonsBed waits for that), they are the
// test's. Every daemon a run started is recorded (by pid and start time) in
// the lock file, and close() ends the ones still running.

/** The sockets the three daemons make under /run/libvirt (removed by the daemons at exit, and by a reboot). */
export const DAEMON_SOCKETS = [
  'libvirt-sock', 'libvirt-sock-ro', 'libvirt-admin-sock',
  'virtlogd-sock', 'virtlogd-admin-sock', 'virtlockd-sock', 'virtlockd-admin-sock',
].map((s) => join('/run/libvirt', s));

/** libvirt's "autostart already done in this boot" markers; a reboot empties /run, so the next libvirtd autostarts its guests. */
export const AUTOSTART_MARKERS = ['/run/libvirt/qemu/autostarted', '/run/libvirt/network/autostarted'];

const DAEMON_NAMES: readonly DaemonName[] = ['virtlockd', 'virtlogd', 'libvirtd'];

/** A bed for runs that start and stop the daemons through rc.libvirt. */
export interface RcDaemonsBed extends LibvirtBed {
  /** The test-private pidfile of a daemon. */
  pidfile(name: DaemonName): string;
  /** The daemons running per their pidfiles now (pid; undefined when not running). */
  daemonPids(): Record<DaemonName, number | undefined>;
  /** What a reboot would empty: pidfiles, the daemons' sockets, rc-libvirt's run directory, libvirt's autostart markers; throws if a daemon of ours still runs. Returns what it removed. */
  simulateReboot(): string[];
}

/** Hold the libvirtd lock, wait until no libvirt daemon runs, and make a bed whose daemons rc.libvirt starts (see above). */
export async function openRcDaemonsBed(prefix: string, opts: { settings?: Record<string, string> } = {}): Promise<RcDaemonsBed> {
  const programs = requireTestbed();
  await holdLibvirtLock();
  const noted: { name: DaemonName; id: ProcessIdentity }[] = [];
  const dir = await makeTempDir(prefix).catch((err: unknown) => {
    releaseLibvirtLock();
    throw err;
  });
  const close = async (): Promise<void> => {
    const errors: unknown[] = [];
    const step = async (f: () => unknown): Promise<void> => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    // Guests are undefined through a libvirtd: ours if it runs, else one the helpers start (and stop).
    recordTestDaemons(noted.filter((d) => isSameProcessAlive(d.id)));
    await step(async () => {
      if ((await runVirsh(['version'], { timeoutMs: 10_000 })).code !== 0) await startLibvirtDaemons();
    });
    await step(removeLibvirtGuests);
    await step(stopLibvirtDaemons);
    await step(() => rm(dir, { recursive: true, force: true }));
    releaseLibvirtLock();
    if (errors.length > 0) throw errors[0];
  };
  try {
    await waitFor('libvirt daemons started by others to stop', () => DAEMON_NAMES.every((n) => findPidsByComm(n).length === 0), {
      timeoutMs: 5 * 60_000,
      intervalMs: 1000,
    });
  } catch (err) {
    await close();
    throw err;
  }
  const virsh = createVirshWrapper(dir, programs.virsh);
  const configFile = join(dir, 'settings');
  writeFileSync(configFile, '# empty: every setting comes from the environment of the run\n');
  mkdirSync(join(dir, 'pid'));
  const pidfile = (name: DaemonName): string => join(dir, 'pid', `${name}.pid`);
  const daemonPids = (): Record<DaemonName, number | undefined> => {
    const out = {} as Record<DaemonName, number | undefined>;
    for (const n of DAEMON_NAMES) {
      let pid: number | undefined;
      try {
        pid = Number.parseInt(readFileSync(pidfile(n), 'utf8'), 10);
      } catch {
        pid = undefined;
      }
      out[n] = pid !== undefined && Number.isInteger(pid) && findPidsByComm(n).includes(pid) ? pid : undefined;
    }
    return out;
  };
  const note = (): void => {
    for (const [name, pid] of Object.entries(daemonPids()) as [DaemonName, number | undefined][]) {
      const id = pid === undefined ? undefined : identifyPid(pid);
      if (id && !noted.some((d) => d.id.pid === id.pid && d.id.startTime === id.startTime)) noted.push({ name, id });
    }
    recordTestDaemons(noted.filter((d) => isSameProcessAlive(d.id)));
  };
  const env = (settings: Record<string, string> = {}): NodeJS.ProcessEnv => ({
    ...bedEnv(dir, configFile, virsh),
    LIBVIRTD_OPTS: `-f /etc/libvirt/libvirtd.conf -p ${pidfile('libvirtd')}`,
    VIRTLOGD_OPTS: `-f /etc/libvirt/virtlogd.conf -p ${pidfile('virtlogd')}`,
    VIRTLOCKD_OPTS: `-f /etc/libvirt/virtlockd.conf -p ${pidfile('virtlockd')}`,
    VIRTUSER: 'root',
    VIRTGROUP: 'root',
    MODULES: '',
    DAEMON_TIMEOUT: '60',
    ...opts.settings,
    ...settings,
  });
  const simulateReboot = (): string[] => {
    const running = DAEMON_NAMES.flatMap((n) => findPidsByComm(n).map((p) => `${n} ${p}`));
    if (running.length > 0) throw new Error(`cannot simulate a reboot: still running: ${running.join(', ')}`);
    const removed: string[] = [];
    for (const p of [...DAEMON_NAMES.map(pidfile), ...DAEMON_SOCKETS, ...AUTOSTART_MARKERS, join(dir, 'run')]) {
      if (existsSync(p)) {
        rmSync(p, { recursive: true, force: true });
        removed.push(p);
      }
    }
    return removed;
  };
  return {
    dir,
    virsh,
    guests: [],
    // None started or reused by the bed: rc.libvirt starts and stops this bed's daemons itself (daemonPids()).
    daemons: { started: [], reused: [] },
    env,
    run: async (args, settings, o = {}) => {
      try {
        return await runRc(args, env(settings), { ...o, program: RC_SCRIPT });
      } finally {
        note();
      }
    },
    close,
    pidfile,
    daemonPids,
    simulateReboot,
  };
}
