// npm run demo: rc.libvirt on three real test guests under the qmp driver (plain QEMU, no libvirt),
// all in a temporary directory: start boots them, stop saves them (with progress), start brings them
// back, guests_shutdown powers them off. Everything it started is killed by PID at the end and the
// directory removed (RCL_DEMO_KEEP=1 keeps it for a look). Needs the test bed (node testbed/setup.mjs)
// and a built dist/rc.libvirt.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bundle = join(repo, 'dist/rc.libvirt');
const guestFiles = process.env.RCL_TESTGUEST_DIR ?? join(repo, '.cache/testguest');
const kernel = join(guestFiles, 'vmlinuz');
const initrd = join(guestFiles, 'initrd.gz');
const GUESTS = ['demo-1', 'demo-2', 'demo-3'];
const FILL_MIB = 32;
const READY_TIMEOUT_MS = 240_000;
// Settings the demo's own file sets: the caller's environment must not override them.
const SETTING_NAMES = ['TIMEOUT', 'PARALLEL', 'ON_SHUTDOWN', 'ON_BOOT', 'START_DELAY', 'DRIVER', 'URIS', 'QEMU_GUESTS_DIR',
  'QEMU_SAVE_DIR', 'RC_LIBVIRT_RUN_DIR', 'RC_LIBVIRT_STATE_DIR', 'RC_LIBVIRT_CONFIG', 'VIRTUSER', 'VIRTGROUP'];

const bold = process.stdout.isTTY ? (t) => `\x1b[1m${t}\x1b[0m` : (t) => t;
const say = (text) => process.stdout.write(`${bold(text)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function findOnPath(name) {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const p = join(d, name);
    if (d !== '' && existsSync(p)) return p;
  }
  return undefined;
}

// What is missing to run the demo, each with its fix.
function missing() {
  const out = [];
  if (!existsSync(bundle)) out.push(`${bundle} is missing: npm run build (npm run demo does it)`);
  if (!findOnPath('qemu-system-x86_64')) out.push('qemu-system-x86_64 is not installed: node testbed/setup.mjs');
  for (const f of [kernel, initrd]) if (!existsSync(f)) out.push(`${f} is missing: node testbed/setup.mjs builds the test guest`);
  return out;
}

// One guest definition of the qmp driver (cli-contract.md, "qmp driver guests").
function writeGuest(dir, name, policy) {
  const consoleLog = join(dir, 'console', `${name}.log`);
  const argv = ['qemu-system-x86_64', '-accel', 'tcg', '-m', '256', '-nodefaults', '-display', 'none',
    '-kernel', kernel, '-initrd', initrd, '-append', `console=ttyS0 quiet fill=${FILL_MIB}`,
    // append=on: a restored QEMU keeps adding to the same console log.
    '-chardev', `file,id=console,path=${consoleLog},append=on`, '-serial', 'chardev:console'];
  writeFileSync(join(dir, 'guests', `${name}.json`), `${JSON.stringify({ argv, autostart: true, policy }, null, 2)}\n`);
  return consoleLog;
}

// Runs dist/rc.libvirt with the demo's settings on this terminal; resolves to its exit code.
function rcLibvirt(config, args) {
  say(`\n$ rc.libvirt --driver qmp ${args.join(' ')}`);
  const env = { ...process.env };
  for (const k of SETTING_NAMES) delete env[k];
  return new Promise((res) => {
    const child = spawn(process.execPath, [bundle, '--config', config, '--driver', 'qmp', ...args], { stdio: 'inherit', env });
    child.on('exit', (code, signal) => {
      say(`(exit ${code ?? signal})`);
      res(code ?? 1);
    });
    child.on('error', (err) => {
      say(`(could not run: ${err.message})`);
      res(1);
    });
  });
}

// The boot ids of the whole console lines of kind KIND (RCL-READY, RCL-POWEROFF); a line still
// being written (no newline yet) does not count.
function consoleLines(file, kind) {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  return [...text.matchAll(new RegExp(`^${kind} boot=(\\S+)[^\\n]*\\n`, 'gm'))].map((m) => m[1]);
}

async function waitForConsole(files, kind, timeoutMs) {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const pending = [...files].filter(([, f]) => consoleLines(f, kind).length === 0).map(([n]) => n);
    if (pending.length === 0) return true;
    if (performance.now() > until) {
      say(`no ${kind} line from ${pending.join(', ')} after ${timeoutMs / 1000} s`);
      return false;
    }
    await sleep(500);
  }
}

// PIDs of the processes whose command line names the demo's directory: only ones the demo started.
function demoProcesses(dir) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(`${dir}/`)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function cleanUp(dir) {
  const pids = demoProcesses(dir);
  if (pids.length > 0) say(`\ncleaning up: ending ${pids.length} process(es) left: ${pids.join(' ')}`);
  for (const pid of pids) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  for (let i = 0; i < 30 && demoProcesses(dir).length > 0; i++) await sleep(100);
  for (const pid of demoProcesses(dir)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  if (process.env.RCL_DEMO_KEEP === '1') {
    say(`kept ${dir} (RCL_DEMO_KEEP=1): remove it when done`);
    return;
  }
  rmSync(dir, { recursive: true, force: true });
  say(`removed ${dir}`);
}

function showSaves(saveDir) {
  const files = existsSync(saveDir) ? readdirSync(saveDir) : [];
  say(files.length === 0 ? `nothing in ${saveDir}` : `saved images in ${saveDir}:`);
  for (const f of files) {
    const st = statSync(join(saveDir, f));
    if (st.isFile()) process.stdout.write(`  ${f}  ${(st.size / 1048576).toFixed(1)} MiB\n`);
  }
}

async function main() {
  const problems = missing();
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`demo: ${p}\n`);
    return 1;
  }
  const dir = mkdtempSync(join(tmpdir(), 'rcl-demo-'));
  let interrupted = false;
  const onSignal = () => { interrupted = true; };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let failed = 0;
  try {
    for (const sub of ['guests', 'save', 'run', 'state', 'console']) mkdirSync(join(dir, sub));
    const config = join(dir, 'default-libvirt');
    writeFileSync(config, [
      '# The demo\'s settings file, in the format of /etc/default/libvirt.',
      'DRIVER=qmp',
      `QEMU_GUESTS_DIR=${join(dir, 'guests')}`,
      `QEMU_SAVE_DIR=${join(dir, 'save')}`,
      `RC_LIBVIRT_RUN_DIR=${join(dir, 'run')}`,
      `RC_LIBVIRT_STATE_DIR=${join(dir, 'state')}`,
      'TIMEOUT=120',
      '',
    ].join('\n'));
    // demo-3 is in a later order group: stop saves it first, start brings it back last.
    const consoles = new Map(GUESTS.map((n) => [n, writeGuest(dir, n, n === 'demo-3' ? { order: 2 } : { order: 1 })]));
    say(`rc.libvirt demo in ${dir}: ${GUESTS.length} test guests (TCG, 256 MiB, ${FILL_MIB} MiB of random data each)`);

    const step = async (args, want = [0]) => {
      if (interrupted) throw new Error('interrupted');
      const code = await rcLibvirt(config, args);
      if (!want.includes(code)) failed++;
      return code;
    };

    if ((await step(['start'])) !== 0) throw new Error('start did not boot the guests');
    say('waiting for the guests to boot (their ready line on the serial console)...');
    if (!(await waitForConsole(consoles, 'RCL-READY', READY_TIMEOUT_MS))) throw new Error('the guests did not boot');
    const bootIds = new Map(GUESTS.map((n) => [n, consoleLines(consoles.get(n), 'RCL-READY')[0]]));
    for (const [n, id] of bootIds) process.stdout.write(`  ${n}: booted, boot id ${id}\n`);

    await step(['status'], [0, 3]);
    await step(['plan']);
    await step(['stop']);
    showSaves(join(dir, 'save'));
    const stillRunning = demoProcesses(dir).length;
    say(stillRunning === 0 ? 'no QEMU runs now: every guest is on disk' : `${stillRunning} process(es) still run after stop`);

    await step(['start']);
    await step(['status'], [0, 3]);
    await step(['guests_shutdown']);
    say('waiting for the guests to power off...');
    await waitForConsole(consoles, 'RCL-POWEROFF', 60_000);
    for (const [n, id] of bootIds) {
      const off = consoleLines(consoles.get(n), 'RCL-POWEROFF').at(-1);
      const ready = consoleLines(consoles.get(n), 'RCL-READY').length;
      const verdict = off === undefined ? 'did not power off'
        : off === id && ready === 1 ? 'powered off in the same boot as before stop: it was restored, not rebooted'
          : `powered off in boot ${off} after ${ready} boot(s): it was NOT restored`;
      if (off !== id || ready !== 1) failed++;
      process.stdout.write(`  ${n}: ${verdict}\n`);
    }
    await step(['status'], [0, 3]);
  } catch (err) {
    if (failed === 0) failed++;
    say(`demo stopped: ${err.message}`);
  } finally {
    await cleanUp(dir);
  }
  say(failed === 0 ? '\ndemo: every step did what it should' : `\ndemo: ${failed} step(s) did not do what they should (see above)`);
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main();
