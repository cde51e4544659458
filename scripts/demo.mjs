// npm run demo: rc.libvirt on three real test guests, run through the shell script users call
// (rc/rc.libvirt with RC_LIBVIRT_BUNDLE=dist/rc.libvirt), in two parts:
//  1. the qmp driver (plain QEMU, no libvirt), all in a temporary directory: start boots the
//     guests, stop saves them (with progress), start brings them back, guests_shutdown powers
//     them off;
//  2. the libvirt cycle: start brings up virtlockd, virtlogd and libvirtd, three libvirt guests
//     boot, stop saves them and stops the daemons, start brings both back (the same boots),
//     guests_shutdown then shutdown. It holds the host-wide lock the integration tests use
//     (/run/rc-libvirt-test.lock) and runs only when no libvirt daemon runs yet: it never touches
//     daemons it did not start. At the end it removes its guests, stops what it started by PID
//     and removes every file it made under libvirt's directories.
// RCL_DEMO_KEEP=1 keeps the temporary directories for a look. Needs the test bed
// (node testbed/setup.mjs) and a built dist/rc.libvirt (npm run demo builds it).
import {
  closeSync, existsSync, ftruncateSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync,
  truncateSync, writeFileSync, writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { holdLock } from './lib/lock.mjs';
import { runner, stopOnError } from './lib/run.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bundle = join(repo, 'dist/rc.libvirt');
const rcScript = join(repo, 'rc/rc.libvirt');
const guestFiles = process.env.RCL_TESTGUEST_DIR || join(repo, '.cache/testguest');
const kernel = join(guestFiles, 'vmlinuz');
const initrd = join(guestFiles, 'initrd.gz');
const FILL_MIB = 32;
const READY_TIMEOUT_MS = 240_000;
const DAEMONS = ['virtlockd', 'virtlogd', 'libvirtd'];
// The lock the integration tests take while they use libvirtd (test/helpers/daemons.ts), and its record.
const TEST_LOCK = '/run/rc-libvirt-test.lock';
const LOCK_WAIT_S = 600;
// libvirt's own directories: what the demo's daemons and guests add there is removed at the end.
const LIBVIRT_DIRS = ['/etc/libvirt', '/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt', '/var/cache/libvirt'];
// Settings the demo's own files set: the caller's environment must not override them.
const SETTING_NAMES = ['TIMEOUT', 'PARALLEL', 'ON_SHUTDOWN', 'ON_BOOT', 'START_DELAY', 'DRIVER', 'URIS', 'QEMU_GUESTS_DIR',
  'QEMU_SAVE_DIR', 'RC_LIBVIRT_RUN_DIR', 'RC_LIBVIRT_STATE_DIR', 'RC_LIBVIRT_CONFIG', 'VIRTUSER', 'VIRTGROUP', 'MODULES',
  'LIBVIRTD_OPTS', 'LIBVIRT_OPTS', 'VIRTLOGD_OPTS', 'VIRTLOCKD_OPTS', 'VIRSH', 'LIBVIRTD', 'VIRTLOGD', 'VIRTLOCKD',
  'DAEMON_TIMEOUT', 'RC_LIBVIRT_NODE'];

const bold = process.stdout.isTTY ? (t) => `\x1b[1m${t}\x1b[0m` : (t) => t;
const say = (text) => process.stdout.write(`${bold(text)}\n`);
const line = (text) => process.stdout.write(`  ${text}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = runner();

// An rc.libvirt step that exited otherwise than it should: the demo stops (after cleaning up).
class StepFailed extends Error {}

let interrupted = false;

function findProgram(name) {
  for (const d of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    if (d !== '' && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

// /proc/PID/stat: name, state, start time (proc(5); the name may hold spaces and parentheses).
function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), state: fields[0], startTime: fields[19] };
  } catch {
    return undefined;
  }
}

const alive = (s) => s !== undefined && s.state !== 'Z' && s.state !== 'X';
const pids = () => readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number);
const pidsByComm = (comm) => pids().filter((p) => procStat(p)?.comm === comm && alive(procStat(p)));
const isSameProcess = ({ pid, startTime }) => alive(procStat(pid)) && procStat(pid)?.startTime === startTime;

// PIDs of the processes whose command line names DIR: only ones the demo started (guests' QEMUs).
function processesNaming(dir) {
  return pids().filter((p) => {
    if (p === process.pid) return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${dir}/`);
    } catch {
      return false;
    }
  });
}

// Ends processes by PID (each checked to still be the same process): SIGTERM, then SIGKILL.
async function endProcesses(ids, what) {
  const live = () => ids.filter(isSameProcess);
  if (live().length === 0) return;
  say(`cleaning up: ending ${what}: ${live().map((i) => i.pid).join(' ')}`);
  for (const { pid } of live()) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  for (let i = 0; i < 100 && live().length > 0; i++) await sleep(100);
  for (const { pid } of live()) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

const identify = (pid) => ({ pid, startTime: procStat(pid)?.startTime ?? '' });

function missingTestbed(programs) {
  const out = [];
  if (!existsSync(bundle)) out.push(`${bundle} is missing: npm run build (npm run demo does it)`);
  for (const p of programs) if (!findProgram(p)) out.push(`${p} is not installed: node testbed/setup.mjs`);
  for (const f of [kernel, initrd]) if (!existsSync(f)) out.push(`${f} is missing: node testbed/setup.mjs builds the test guest`);
  return out;
}

// Runs rc.libvirt through the shell script, on this terminal, with the demo's settings file;
// returns its exit code; stops the demo when it is not one of WANT.
async function rcLibvirt(config, args, want = [0]) {
  if (interrupted) throw new StepFailed('interrupted');
  say(`\n$ rc.libvirt ${args.join(' ')}`);
  const env = { ...process.env, RC_LIBVIRT_BUNDLE: bundle };
  for (const k of SETTING_NAMES) delete env[k];
  const r = await runner({ stdio: 'inherit', nothrow: true, env })`${rcScript} --config ${config} ${args}`;
  const code = r.exitCode ?? r.signal;
  say(`(exit ${code})`);
  if (!want.includes(code)) {
    throw new StepFailed(`\`${rcScript} --config ${config} ${args.join(' ')}\` exited ${code}, not ${want.join(' or ')} (its output is above)`);
  }
  return code;
}

function writeSettings(dir, lines) {
  const file = join(dir, 'default-libvirt');
  writeFileSync(file, ['# The demo\'s settings file, in the format of /etc/default/libvirt.', ...lines, ''].join('\n'));
  return file;
}

// The boot ids of the whole console lines of kind KIND (RCL-READY, RCL-POWEROFF); a line still
// being written (no newline yet) does not count.
function consoleLines(file, kind) {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  return [...text.matchAll(new RegExp(`^${kind} boot=(\\S+)[^\\n]*\\n`, 'gm'))].map((m) => m[1]);
}

async function waitForConsole(consoles, kind, timeoutMs) {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const pending = [...consoles].filter(([, f]) => consoleLines(f, kind).length === 0).map(([n]) => n);
    if (pending.length === 0) return;
    if (interrupted) throw new StepFailed('interrupted');
    if (performance.now() > until) throw new StepFailed(`no ${kind} line from ${pending.join(', ')} after ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}

async function waitForBoot(consoles) {
  say('waiting for the guests to boot (their ready line on the serial console)...');
  await waitForConsole(consoles, 'RCL-READY', READY_TIMEOUT_MS);
  const bootIds = new Map([...consoles].map(([n, f]) => [n, consoleLines(f, 'RCL-READY')[0]]));
  for (const [n, id] of bootIds) line(`${n}: booted, boot id ${id}`);
  return bootIds;
}

// After guests_shutdown: each guest powered off in the boot it had before stop, and booted once.
async function checkSameBoots(consoles, bootIds) {
  say('waiting for the guests to power off...');
  await waitForConsole(consoles, 'RCL-POWEROFF', 120_000);
  let wrong = 0;
  for (const [n, id] of bootIds) {
    const off = consoleLines(consoles.get(n), 'RCL-POWEROFF').at(-1);
    const ready = consoleLines(consoles.get(n), 'RCL-READY').length;
    const same = off === id && ready === 1;
    if (!same) wrong++;
    line(`${n}: ${same ? `powered off in boot ${off}, the one it had before stop: it was restored, not rebooted`
      : `powered off in boot ${off} after ${ready} boot(s): it was NOT restored`}`);
  }
  if (wrong > 0) throw new StepFailed(`${wrong} guest(s) did not come back in the same boot`);
}

function showSaves(saveDir, names) {
  const files = existsSync(saveDir) ? readdirSync(saveDir).filter((f) => names.some((n) => f.startsWith(`${n}.`))) : [];
  say(files.length === 0 ? `no saved image in ${saveDir}` : `saved images in ${saveDir}:`);
  for (const f of files.sort()) {
    const st = statSync(join(saveDir, f));
    if (st.isFile()) line(`${f}  ${(st.size / 1048576).toFixed(1)} MiB`);
  }
}

function removeTempDir(dir) {
  if (process.env.RCL_DEMO_KEEP === '1') {
    say(`kept ${dir} (RCL_DEMO_KEEP=1): remove it when done`);
    return;
  }
  rmSync(dir, { recursive: true, force: true });
  say(`removed ${dir}`);
}

// ---- part 1: the qmp driver ----

// One guest definition of the qmp driver (cli-contract.md, "qmp driver guests").
function writeQmpGuest(dir, name, policy) {
  const consoleLog = join(dir, 'console', `${name}.log`);
  const argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '256', '-nodefaults', '-display', 'none',
    '-kernel', kernel, '-initrd', initrd, '-append', `console=ttyS0 quiet no_timer_check fill=${FILL_MIB}`,
    // append=on: a restored QEMU keeps adding to the same console log.
    '-chardev', `file,id=console,path=${consoleLog},append=on`, '-serial', 'chardev:console'];
  writeFileSync(join(dir, 'guests', `${name}.json`), `${JSON.stringify({ argv, autostart: true, policy }, null, 2)}\n`);
  return consoleLog;
}

async function qmpPart() {
  const names = ['demo-1', 'demo-2', 'demo-3'];
  const dir = mkdtempSync(join(tmpdir(), 'rcl-demo-'));
  try {
    for (const sub of ['guests', 'save', 'run', 'state', 'console']) mkdirSync(join(dir, sub));
    const config = writeSettings(dir, ['DRIVER=qmp', `QEMU_GUESTS_DIR=${join(dir, 'guests')}`, `QEMU_SAVE_DIR=${join(dir, 'save')}`,
      `RC_LIBVIRT_RUN_DIR=${join(dir, 'run')}`, `RC_LIBVIRT_STATE_DIR=${join(dir, 'state')}`, 'TIMEOUT=120']);
    // demo-3 is in a later order group: stop saves it first, start brings it back last.
    const consoles = new Map(names.map((n) => [n, writeQmpGuest(dir, n, { order: n === 'demo-3' ? 2 : 1 })]));
    say(`\n=== 1. the qmp driver, in ${dir}: ${names.length} test guests (TCG, 256 MiB, ${FILL_MIB} MiB of random data each)`);

    await rcLibvirt(config, ['start']);
    const bootIds = await waitForBoot(consoles);
    await rcLibvirt(config, ['status']);
    await rcLibvirt(config, ['plan']);
    await rcLibvirt(config, ['stop']);
    showSaves(join(dir, 'save'), names);
    const left = processesNaming(dir).length;
    say(left === 0 ? 'no QEMU runs now: every guest is on disk' : `${left} process(es) still run after stop`);
    if (left > 0) throw new StepFailed('stop left QEMU running');
    await rcLibvirt(config, ['start']);
    await rcLibvirt(config, ['status']);
    await rcLibvirt(config, ['guests_shutdown']);
    await checkSameBoots(consoles, bootIds);
    await rcLibvirt(config, ['status'], [3]);
  } finally {
    await endProcesses(processesNaming(dir).map(identify), 'QEMU processes the demo started');
    removeTempDir(dir);
  }
}

// ---- part 2: the libvirt cycle ----

const xmlEscape = (s) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]);

function libvirtGuestXml(name, consolePath) {
  return `<domain type='qemu'>
  <name>${xmlEscape(name)}</name>
  <description>rc-libvirt demo guest (npm run demo); removed when the demo ends</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(kernel)}</kernel>
    <initrd>${xmlEscape(initrd)}</initrd>
    <cmdline>console=ttyS0 quiet no_timer_check fill=${FILL_MIB}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='${xmlEscape(consolePath)}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

// Every path under libvirt's directories, with its size for regular files.
function snapshot() {
  const out = new Map();
  const visit = (p) => {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (st === undefined) return;
    out.set(p, st.isFile() ? st.size : -1);
    if (st.isDirectory()) for (const e of readdirSync(p)) visit(join(p, e));
  };
  for (const d of LIBVIRT_DIRS) visit(d);
  return out;
}

// Removes what the demo added under libvirt's directories (deepest first) and cuts the logs it
// appended to back to their size before; says what it did.
function restoreLibvirtDirs(before) {
  const after = snapshot();
  const added = [...after.keys()].filter((p) => !before.has(p)).sort((a, b) => b.length - a.length);
  for (const p of added) {
    try {
      if (lstatSync(p).isDirectory()) rmdirSync(p);
      else rmSync(p, { force: true });
    } catch (err) {
      line(`could not remove ${p}: ${err.message}`);
    }
  }
  const grown = [...after].filter(([p, size]) => p.startsWith('/var/log/libvirt/') && before.has(p) && size > before.get(p) && before.get(p) >= 0);
  for (const [p] of grown) truncateSync(p, before.get(p));
  say(`libvirt's directories: removed ${added.length} path(s) the demo's daemons and guests made`
    + `${grown.length > 0 ? `, cut ${grown.length} log(s) back to their size before (${grown.map(([p]) => p).join(' ')})` : ''}`);
  for (const p of added.sort()) line(`removed ${p}`);
}

// The test lock's record (as test/helpers/daemons.ts writes it): a test run that finds the lock
// left by a demo that died stops the daemons named in it.
function writeLockRecord(fd, since, daemons) {
  const rec = { pid: process.pid, since, cwd: process.cwd(), daemons: daemons.filter((d) => isSameProcess(d)) };
  ftruncateSync(fd, 0);
  writeSync(fd, `${JSON.stringify(rec)}\n`, 0);
}

// The daemons now running per their pidfiles (rc.libvirt's defaults, /var/run/libvirt/NAME.pid).
function runningDaemons() {
  return DAEMONS.flatMap((name) => {
    try {
      const pid = Number(readFileSync(`/var/run/libvirt/${name}.pid`, 'utf8').trim());
      return procStat(pid)?.comm === name && alive(procStat(pid)) ? [{ name, ...identify(pid) }] : [];
    } catch {
      return [];
    }
  });
}

// Why the libvirt part cannot run here without touching what is not the demo's, or undefined.
function foreignLibvirt(names) {
  const running = DAEMONS.flatMap((n) => pidsByComm(n).map((p) => `${n} (pid ${p})`));
  if (running.length > 0) {
    return `${running.join(', ')} already ${running.length === 1 ? 'runs' : 'run'} on this host, and the demo never touches daemons it did not start`;
  }
  const autostart = '/etc/libvirt/qemu/autostart';
  const auto = existsSync(autostart) ? readdirSync(autostart) : [];
  if (auto.length > 0) return `libvirtd would autostart this host's guests (${auto.join(', ')}), and the demo's stop would save them`;
  const taken = names.filter((n) => existsSync(`/etc/libvirt/qemu/${n}.xml`));
  if (taken.length > 0) return `this host already has libvirt guests named ${taken.join(', ')}`;
  return undefined;
}

async function libvirtPart() {
  const names = ['rcl-demo-1', 'rcl-demo-2', 'rcl-demo-3'];
  say('\n=== 2. the libvirt cycle: daemons started by rc.libvirt, three libvirt guests');
  const lockFd = holdLock(TEST_LOCK, {
    waitSeconds: LOCK_WAIT_S,
    onWait: () => say(`waiting up to ${LOCK_WAIT_S / 60} min for ${TEST_LOCK}: a test run is using libvirtd`),
  });
  if (lockFd === undefined) {
    say(`skipping the libvirt part: ${TEST_LOCK} stayed held for ${LOCK_WAIT_S / 60} min (a test run is using libvirtd)`);
    return 'skipped';
  }
  const since = new Date().toISOString();
  const ours = [];
  let dir;
  let before;
  try {
    const why = foreignLibvirt(names);
    if (why !== undefined) {
      say(`skipping the libvirt part: ${why}`);
      return 'skipped';
    }
    before = snapshot();
    dir = mkdtempSync(join(tmpdir(), 'rcl-demo-libvirt-'));
    for (const sub of ['run', 'state', 'console']) mkdirSync(join(dir, sub));
    const config = writeSettings(dir, [`RC_LIBVIRT_RUN_DIR=${join(dir, 'run')}`, `RC_LIBVIRT_STATE_DIR=${join(dir, 'state')}`,
      'TIMEOUT=120', 'DAEMON_TIMEOUT=60', 'VIRTUSER=root', 'VIRTGROUP=root',
      '# No kernel modules to load on this test machine.', 'MODULES=""']);
    const consoles = new Map(names.map((n) => [n, join(dir, 'console', `${n}.log`)]));
    // Records the daemons just started, so cleanup (or a test run after a crash) can stop them.
    const noteDaemons = () => {
      for (const d of runningDaemons()) if (!ours.some((o) => o.pid === d.pid && o.startTime === d.startTime)) ours.push(d);
      writeLockRecord(lockFd, since, ours);
    };
    say(`settings in ${config}; saved images go to libvirt's /var/lib/libvirt/qemu/save`);

    try {
      await rcLibvirt(config, ['start']);
    } finally {
      noteDaemons();
    }
    line(`daemons started: ${ours.map((d) => `${d.name} (pid ${d.pid})`).join(', ')}`);
    say(`defining and starting ${names.join(', ')} (virsh define, virsh start; TCG, 256 MiB, ${FILL_MIB} MiB of random data each)`);
    for (const n of names) {
      const xml = join(dir, `${n}.xml`);
      writeFileSync(xml, libvirtGuestXml(n, consoles.get(n)));
      await run`virsh -c qemu:///system define --file ${xml}`;
      await run`virsh -c qemu:///system start --domain ${n}`;
    }
    const bootIds = await waitForBoot(consoles);

    await rcLibvirt(config, ['status']);
    await rcLibvirt(config, ['stop']);
    showSaves('/var/lib/libvirt/qemu/save', names);
    const up = ours.filter(isSameProcess);
    const left = processesNaming(dir).length;
    say(up.length === 0 && left === 0 ? 'no daemon and no guest runs now: the guests are on disk, as at a host shutdown'
      : `still running after stop: ${up.map((d) => d.name).join(' ')} ${left > 0 ? `${left} QEMU(s)` : ''}`);
    if (up.length > 0 || left > 0) throw new StepFailed('stop left daemons or guests running');

    try {
      await rcLibvirt(config, ['start']);
    } finally {
      noteDaemons();
    }
    await rcLibvirt(config, ['status']);
    await rcLibvirt(config, ['guests_shutdown']);
    await checkSameBoots(consoles, bootIds);
    say(`removing the demo's guests (virsh undefine): ${names.join(', ')}`);
    for (const n of names) await run`virsh -c qemu:///system undefine --managed-save --domain ${n}`;
    await rcLibvirt(config, ['shutdown']);
    await rcLibvirt(config, ['status'], [3]);
    say('(the journal in the demo\'s state directory still names the guests that ran: a next start would boot them'
      + ' again, ON_BOOT=restore; the demo has removed them, and removes that directory now)');
    return 'ran';
  } finally {
    if (dir !== undefined) {
      await cleanUpLibvirt(names, dir, ours);
      restoreLibvirtDirs(before);
      removeTempDir(dir);
    }
    ftruncateSync(lockFd, 0);
    closeSync(lockFd);
  }
}

// After a failure: the demo's guests removed (through its own libvirtd while it runs), its
// daemons and guests' QEMUs ended by PID. What is left of them on disk (a definition, a saved
// image) is then removed with the rest of what the demo added to libvirt's directories.
async function cleanUpLibvirt(names, dir, ours) {
  const defined = names.filter((n) => existsSync(`/etc/libvirt/qemu/${n}.xml`));
  if (defined.length > 0 && ours.some((d) => d.name === 'libvirtd' && isSameProcess(d))) {
    say(`cleaning up: removing ${defined.join(', ')}`);
    for (const n of defined) {
      await runner({ nothrow: true })`virsh -c qemu:///system destroy --domain ${n}`;
      const r = await runner({ nothrow: true })`virsh -c qemu:///system undefine --managed-save --domain ${n}`;
      if (r.exitCode !== 0) line(`virsh undefine ${n}: ${r.stderr.trim()}`);
    }
  }
  await endProcesses(processesNaming(dir).map(identify), 'QEMU processes the demo started');
  await endProcesses([...ours].reverse(), "the demo's libvirt daemons");
}

await stopOnError('demo', async () => {
  const problems = missingTestbed(['qemu-system-x86_64', 'virsh', 'libvirtd', 'virtlogd', 'virtlockd', 'flock']);
  if (problems.length > 0) throw new Error(problems.join('\n  '));
  if (process.getuid?.() !== 0) throw new Error('run the demo as root: it starts QEMU guests and libvirt daemons');
  const onSignal = () => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  await qmpPart();
  const libvirt = await libvirtPart();
  say(libvirt === 'ran' ? '\ndemo: every step did what it should, in both parts'
    : '\ndemo: the qmp part did what it should; the libvirt part was skipped (see above)');
});
