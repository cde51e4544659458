// Resolving the settings: defaults < settings file < environment < options
// (cli-contract.md, "Options"). Every bad value is a ConfigError naming where.
import { readFile as fsReadFile } from 'node:fs/promises';
import type { CliOptions } from './cli-options.js';
import { ConfigError } from './errors.js';
import { DEFAULTS, type Settings } from './settings.js';
import { parseSettingsFile } from './settings-file.js';
import { SETTING_KEYS, type SettingKey } from './setting-keys.js';

/** Reads a file as UTF-8; rejects with an ENOENT error when it is missing. */
export type ReadFileFn = (path: string) => Promise<string>;

/** Inputs of loadSettings. */
export interface LoadSettingsInput {
  options: CliOptions;
  env: NodeJS.ProcessEnv;
  /** Injected in tests (memfs); defaults to node:fs. */
  readFile?: ReadFileFn;
}

/** Settings from defaults, the settings file, the environment and the options, validated. */
export async function loadSettings(input: LoadSettingsInput): Promise<Settings> {
  const { options, env } = input;
  const readFile: ReadFileFn = input.readFile ?? ((p) => fsReadFile(p, 'utf8'));
  const settings: Settings = { ...DEFAULTS, uris: [...DEFAULTS.uris], modules: [...DEFAULTS.modules] };

  const envConfig = env.RC_LIBVIRT_CONFIG;
  const explicit = options.config !== undefined;
  const configFile = options.config ?? (envConfig !== undefined && envConfig !== '' ? envConfig : DEFAULTS.configFile);
  if (configFile === '') throw new ConfigError('--config: an empty file name', { key: '--config' });
  settings.configFile = configFile;

  // 1. The settings file.
  let text: string | undefined;
  try {
    text = await readFile(configFile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') {
      throw new ConfigError(`${configFile}: cannot read the settings file (${code ?? (err as Error).message})`, { file: configFile });
    }
    if (explicit) throw new ConfigError(`${configFile}: the settings file given with --config does not exist`, { file: configFile });
  }
  if (text !== undefined) {
    const entries = parseSettingsFile(text, configFile);
    applyLayer(settings, entries.map((e) => ({ ...e, where: `${configFile}:${e.line}: ${e.key}`, file: configFile })));
  }

  // 2. The environment: only the names rc.libvirt knows (it holds many unrelated ones).
  const fromEnv: LayerEntry[] = [];
  for (const spec of Object.values(SETTING_KEYS)) {
    const raw = env[spec.key];
    if (raw === undefined) continue;
    // An empty variable means "not set", except where empty is a meaningful value (options strings, module list).
    if (raw === '' && !spec.emptyAllowed) continue;
    fromEnv.push({ key: spec.key, value: raw, where: `environment variable ${spec.key}` });
  }
  applyLayer(settings, fromEnv);

  // 3. The options.
  const fromOptions: LayerEntry[] = [];
  const opt = (key: SettingKey, value: string | undefined, name: string): void => {
    if (value !== undefined) fromOptions.push({ key, value, where: `option ${name}` });
  };
  opt('TIMEOUT', options.timeout, '--timeout');
  opt('PARALLEL', options.parallel, '--parallel');
  opt('ON_SHUTDOWN', options.onShutdown, '--on-shutdown');
  opt('ON_BOOT', options.onBoot, '--on-boot');
  opt('START_DELAY', options.startDelay, '--start-delay');
  opt('DRIVER', options.driver, '--driver');
  opt('QEMU_GUESTS_DIR', options.guestsDir, '--guests-dir');
  if (options.uri !== undefined) {
    if (options.uri.length === 0 || options.uri.some((u) => u.trim() === '' || /\s/.test(u))) {
      throw new ConfigError(`option --uri: a connection URI must be one non-empty word, got ${JSON.stringify(options.uri)}`, { key: '--uri' });
    }
    fromOptions.push({ key: 'URIS', value: options.uri.join(' '), where: 'option --uri' });
  }
  applyLayer(settings, fromOptions);
  return settings;
}

interface LayerEntry {
  key: string;
  value: string;
  /** e.g. `/etc/default/libvirt:12: TIMEOUT` or `environment variable TIMEOUT` */
  where: string;
  file?: string;
  line?: number;
}

// One layer: later entries win; within a layer LIBVIRTD_OPTS wins over LIBVIRT_OPTS (the daemon's own name).
function applyLayer(settings: Settings, entries: LayerEntry[]): void {
  const hasLibvirtd = entries.some((e) => e.key === 'LIBVIRTD_OPTS');
  for (const e of entries) {
    const spec = SETTING_KEYS[e.key as SettingKey];
    if (!spec) {
      throw new ConfigError(`${e.where}: unknown setting (known: ${Object.keys(SETTING_KEYS).join(' ')})`, where(e));
    }
    if (e.key === 'LIBVIRT_OPTS' && hasLibvirtd) continue;
    if (e.key === 'RC_LIBVIRT_CONFIG') {
      if (e.file !== undefined) throw new ConfigError(`${e.where}: the settings file cannot name another settings file`, where(e));
      continue; // already used to find the file
    }
    let value: unknown;
    try {
      value = spec.parse(e.value);
    } catch (err) {
      throw new ConfigError(`${e.where}: ${(err as Error).message} (got ${JSON.stringify(e.value)})`, where(e));
    }
    (settings as unknown as Record<string, unknown>)[spec.field] = value;
  }
}

function where(e: LayerEntry): { file?: string; line?: number; key?: string } {
  const w: { file?: string; line?: number; key?: string } = { key: e.key };
  if (e.file !== undefined) w.file = e.file;
  if (e.line !== undefined) w.line = e.line;
  return w;
}
