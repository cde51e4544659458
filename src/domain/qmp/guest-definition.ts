// QMP driver guest definitions: QEMU_GUESTS_DIR/NAME.json =
// {"argv": ["qemu-system-x86_64", ...], "autostart": true, "policy": {...}}.
// Loading validates every field and names the file and field that is wrong.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OperationRefusedError } from '../errors.js';
import { clampGuestTimeout, type BootAction, type ShutdownAction } from '../../config/settings.js';
import type { GuestPolicy } from '../types.js';

/** A validated guest definition. */
export interface QmpGuestDefinition {
  /** The file's base name without `.json`: the guest's id and name. */
  name: string;
  file: string;
  argv: string[];
  autostart: boolean;
  policy: GuestPolicy;
  /** From `-m` in argv (default 128 MiB). */
  memoryKiB: number;
  /** Why a save would fail (host devices, 9p/virtiofs shares). */
  saveBlockers: string[];
}

/** A definition file that is not valid: names the file and the field. */
export class GuestDefinitionError extends OperationRefusedError {
  constructor(readonly file: string, readonly field: string, problem: string) {
    super(`${file}: ${field}: ${problem}`, { guest: definitionName(file) });
  }
}

/** Options the driver adds itself, so a definition may not carry them. */
export const RESERVED_OPTIONS = ['-name', '-qmp', '-pidfile', '-daemonize', '-incoming', '-S'] as const;

const SHUTDOWN_ACTIONS: readonly ShutdownAction[] = ['managedsave', 'shutdown', 'destroy'];
const BOOT_ACTIONS: readonly BootAction[] = ['restore', 'ignore'];
const DEFAULT_MEMORY_KIB = 128 * 1024;

/** The guest name a definition file stands for (`/dir/NAME.json` → NAME). */
export function definitionName(file: string): string {
  const base = file.slice(file.lastIndexOf('/') + 1);
  return base.endsWith('.json') ? base.slice(0, -'.json'.length) : base;
}

/** Why `name` cannot be a qmp guest name, or undefined when it can. */
export function checkGuestName(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.startsWith('.')) return 'the name starts with a dot';
  if (/[/\x00-\x1f\x7f]/.test(name)) return 'the name contains "/" or a control character';
  return undefined;
}

/** The names of the definition files in `dir` (sorted; hidden files and non-.json ignored). */
export async function listDefinitionFiles(dir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries.filter((f) => f.endsWith('.json') && !f.startsWith('.')).sort().map((f) => join(dir, f));
}

/** Read and validate one definition file. */
export async function loadDefinition(file: string): Promise<QmpGuestDefinition> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new GuestDefinitionError(file, '(file)', `cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new GuestDefinitionError(file, '(file)', `not valid JSON (${(err as Error).message})`);
  }
  return parseDefinition(file, json);
}

/** Validate a parsed definition. */
export function parseDefinition(file: string, json: unknown): QmpGuestDefinition {
  const fail = (field: string, problem: string): never => {
    throw new GuestDefinitionError(file, field, problem);
  };
  const name = definitionName(file);
  const badName = checkGuestName(name);
  if (badName) fail('(file name)', badName);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return fail('(file)', 'must be a JSON object');
  const obj = json as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!['argv', 'autostart', 'policy'].includes(key)) fail(key, 'unknown field (known: argv, autostart, policy)');
  }
  const argv = obj['argv'];
  if (!Array.isArray(argv) || argv.length === 0) return fail('argv', 'must be a non-empty array of strings');
  argv.forEach((a, i) => {
    if (typeof a !== 'string') fail(`argv[${i}]`, 'must be a string');
    else if (a.includes('\0')) fail(`argv[${i}]`, 'contains a NUL byte');
  });
  const args = argv as string[];
  if (args[0] === '') fail('argv[0]', 'the QEMU program is empty');
  args.forEach((a, i) => {
    const opt = a.startsWith('--') ? a.slice(1) : a;
    if (i > 0 && (RESERVED_OPTIONS as readonly string[]).includes(opt)) {
      fail(`argv[${i}]`, `${a} is added by the driver; remove it`);
    }
  });
  const autostart = obj['autostart'] ?? false;
  if (typeof autostart !== 'boolean') fail('autostart', 'must be true or false');
  return {
    name,
    file,
    argv: args,
    autostart: autostart as boolean,
    policy: parsePolicy(obj['policy'], fail),
    memoryKiB: memoryFromArgv(args, (problem) => fail('argv (-m)', problem)),
    saveBlockers: saveBlockersOf(args),
  };
}

function parsePolicy(raw: unknown, fail: (field: string, problem: string) => never): GuestPolicy {
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return fail('policy', 'must be an object');
  const p = raw as Record<string, unknown>;
  const policy: GuestPolicy = {};
  for (const key of Object.keys(p)) {
    if (!['order', 'on_shutdown', 'timeout', 'on_boot'].includes(key)) fail(`policy.${key}`, 'unknown key (known: order, on_shutdown, timeout, on_boot)');
  }
  if (p['order'] !== undefined) {
    if (typeof p['order'] !== 'number' || !Number.isInteger(p['order'])) fail('policy.order', 'must be an integer');
    policy.order = p['order'] as number;
  }
  if (p['on_shutdown'] !== undefined) {
    if (!SHUTDOWN_ACTIONS.includes(p['on_shutdown'] as ShutdownAction)) fail('policy.on_shutdown', `must be one of ${SHUTDOWN_ACTIONS.join(', ')}`);
    policy.onShutdown = p['on_shutdown'] as ShutdownAction;
  }
  if (p['timeout'] !== undefined) {
    const t = p['timeout'];
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) fail('policy.timeout', 'must be a number of seconds > 0');
    // Above the maximum (7 days): the maximum, as for TIMEOUT; the plan shows the timeout used.
    policy.timeout = clampGuestTimeout(t as number).seconds;
  }
  if (p['on_boot'] !== undefined) {
    if (!BOOT_ACTIONS.includes(p['on_boot'] as BootAction)) fail('policy.on_boot', `must be one of ${BOOT_ACTIONS.join(', ')}`);
    policy.onBoot = p['on_boot'] as BootAction;
  }
  return policy;
}

/** The memory size `-m` gives, in KiB (QEMU's default unit is MiB); 128 MiB without `-m`. */
export function memoryFromArgv(argv: readonly string[], fail: (problem: string) => never): number {
  let kib = DEFAULT_MEMORY_KIB;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a !== '-m' && a !== '--m') continue;
    const v = argv[i + 1];
    if (v === undefined) return fail('-m has no value');
    const size = v.split(',').map((part) => (part.startsWith('size=') ? part.slice(5) : part)).find((part) => !part.includes('='));
    const m = /^(\d+(?:\.\d+)?)([kKmMgGtT]?)[bB]?$/.exec(size ?? '');
    if (!m) return fail(`cannot read the size in "-m ${v}"`);
    const n = Number(m[1]);
    const unit = (m[2] ?? '').toLowerCase();
    const factor = unit === 'k' ? 1 : unit === 'g' ? 1024 * 1024 : unit === 't' ? 1024 * 1024 * 1024 : 1024;
    kib = Math.round(n * factor);
  }
  return kib;
}

/** Options in argv that make a migration (so a save) fail. */
export function saveBlockersOf(argv: readonly string[]): string[] {
  const blockers = new Set<string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const v = argv[i + 1] ?? '';
    if (a === '-device' || a === '--device') {
      const driver = v.split(',')[0] ?? '';
      if (driver === 'vfio-pci' || driver.startsWith('vfio-')) blockers.add(`host device (${driver})`);
      if (driver.startsWith('virtio-9p')) blockers.add(`9p share (${driver})`);
      if (driver === 'vhost-user-fs-pci' || driver === 'vhost-user-fs-device') blockers.add(`virtiofs share (${driver})`);
      if (driver === 'usb-host') blockers.add('host USB device (usb-host)');
      if (driver === 'pci-assign') blockers.add('host device (pci-assign)');
    }
    if (a === '-virtfs' || a === '--virtfs') blockers.add('9p share (-virtfs)');
    if (a === '-fsdev' || a === '--fsdev') blockers.add('9p share (-fsdev)');
    if ((a === '-cpu' || a === '--cpu') && /(^|,)\+?invtsc(=on)?(,|$)/.test(v)) blockers.add('invariant TSC (invtsc)');
    // QEMU connects to the save socket (and listens on the restore socket) after it has dropped root: the
    // runtime directory is root's alone (0700), so the migration would fail and every stop fall back to shutdown.
    if (a === '-runas' || a === '--runas') blockers.add(`drops privileges (-runas ${v}): QEMU cannot reach the save socket in the root-only runtime directory`);
    if ((a === '-run-with' || a === '--run-with') && /(^|,)user=/.test(v)) blockers.add(`drops privileges (-run-with ${v}): QEMU cannot reach the save socket in the root-only runtime directory`);
    if (a === '-chroot' || a === '--chroot') blockers.add(`chroot (-chroot ${v}): QEMU cannot reach the save socket outside it`);
  }
  return [...blockers];
}
