// Resolving the settings: defaults < settings file < environment < options
// (cli-contract.md, "Options"). Every bad line, unknown key and bad value is a
// ConfigError naming where; all of them are found, not only the first.
import { readFile as fsReadFile } from 'node:fs/promises';
import type { CliOptions } from './cli-options.js';
import { ConfigError } from './errors.js';
import { DEFAULTS, type Settings } from './settings.js';
import { readSettingsFile } from './settings-file.js';
import { SETTING_KEYS, type SettingKey, type SettingKeySpec } from './setting-keys.js';

/** Reads a file as UTF-8; rejects with an ENOENT error when it is missing. */
export type ReadFileFn = (path: string) => Promise<string>;

/** Inputs of loadSettings. */
export interface LoadSettingsInput {
  options: CliOptions;
  env: NodeJS.ProcessEnv;
  /** Injected in tests (memfs); defaults to node:fs. */
  readFile?: ReadFileFn;
}

/** The settings as read, with everything that was wrong with them. */
export interface SettingsReport {
  /**
   * The settings. A bad line is skipped and a bad value ignored: that setting
   * keeps the value it has without it (its default, unless an earlier line or
   * layer set it). When DRIVER or URIS was bad (or the settings file could not
   * be read), `everyDriver` is set: the run acts through libvirt at the URIs
   * and at its default URI, and through the qmp driver.
   */
  settings: Settings;
  /** Every error, in order: settings file (by line), environment, options. */
  errors: ConfigError[];
  /** Values used with a change: a duration above its maximum, clamped to it. */
  warnings: string[];
}

/** Settings from defaults, the settings file, the environment and the options; any error throws one ConfigError naming every error. */
export async function loadSettings(input: LoadSettingsInput): Promise<Settings> {
  const report = await readSettings(input);
  if (report.errors.length > 0) throw combinedError(report.errors);
  return report.settings;
}

/** One ConfigError naming every error of `errors` (the first one's own when it is alone). */
export function combinedError(errors: readonly ConfigError[]): ConfigError {
  const first = errors[0] as ConfigError;
  if (errors.length === 1) return first;
  return new ConfigError(`${errors.length} errors in the settings:\n${errors.map((e) => `  ${e.message}`).join('\n')}`, first.where);
}

/** Read every layer of the settings, collecting every error and warning instead of stopping at the first. */
export async function readSettings(input: LoadSettingsInput): Promise<SettingsReport> {
  const { options, env } = input;
  const readFile: ReadFileFn = input.readFile ?? ((p) => fsReadFile(p, 'utf8'));
  const settings: Settings = { ...DEFAULTS, uris: [...DEFAULTS.uris], modules: [...DEFAULTS.modules] };
  const report: SettingsReport = { settings, errors: [], warnings: [] };
  const unsure = (): void => unsureOfDriver(settings);

  const envConfig = env.RC_LIBVIRT_CONFIG;
  const explicit = options.config !== undefined;
  let configFile = options.config ?? (envConfig !== undefined && envConfig !== '' ? envConfig : DEFAULTS.configFile);
  if (configFile === '') {
    report.errors.push(new ConfigError('--config: an empty file name', { key: '--config' }));
    configFile = DEFAULTS.configFile;
  }
  settings.configFile = configFile;

  // 1. The settings file.
  let text: string | undefined;
  try {
    text = await readFile(configFile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') {
      report.errors.push(new ConfigError(`${configFile}: cannot read the settings file (${code ?? (err as Error).message}): every setting of it is at its default`, { file: configFile }));
      unsure();
    } else if (explicit) {
      report.errors.push(new ConfigError(`${configFile}: the settings file given with --config does not exist: every setting of it is at its default`, { file: configFile }));
      unsure();
    }
  }
  if (text !== undefined) {
    const { entries, errors } = readSettingsFile(text, configFile);
    const first = report.errors.length;
    report.errors.push(...errors);
    // A bad DRIVER or URIS line (also one that is no KEY=value line but begins with either name, or a misspelt name): the run cannot know which driver the guests are under.
    if (errors.some((e) => aboutDriver(e.where?.key))) unsure();
    applyLayer(report, entries.map((e) => ({ ...e, where: `${configFile}:${e.line}: ${e.key}`, file: configFile })));
    // The file's errors in the order of its lines (bad lines and bad values alike).
    report.errors.splice(first, Infinity, ...report.errors.slice(first).sort((a, b) => (a.where?.line ?? 0) - (b.where?.line ?? 0)));
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
  applyLayer(report, fromEnv);

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
      report.errors.push(new ConfigError(`option --uri: a connection URI must be one non-empty word, got ${JSON.stringify(options.uri)}`, { key: '--uri' }));
      unsure();
    } else {
      fromOptions.push({ key: 'URIS', value: options.uri.join(' '), where: 'option --uri' });
    }
  }
  applyLayer(report, fromOptions);
  return report;
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
// A bad entry is recorded and skipped; a bad DRIVER or URIS also makes the run act through every driver.
function applyLayer(report: SettingsReport, entries: LayerEntry[]): void {
  const settings = report.settings;
  const hasLibvirtd = entries.some((e) => e.key === 'LIBVIRTD_OPTS');
  const fail = (e: LayerEntry, message: string): void => {
    report.errors.push(new ConfigError(`${e.where}: ${message}`, where(e)));
    if (aboutDriver(e.key)) unsureOfDriver(settings);
  };
  for (const e of entries) {
    const spec: SettingKeySpec | undefined = SETTING_KEYS[e.key as SettingKey];
    if (!spec) {
      fail(e, `unknown setting (known: ${Object.keys(SETTING_KEYS).join(' ')})`);
      continue;
    }
    if (e.key === 'LIBVIRT_OPTS' && hasLibvirtd) continue;
    if (e.key === 'RC_LIBVIRT_CONFIG') {
      if (e.file !== undefined) fail(e, 'the settings file cannot name another settings file');
      continue; // already used to find the file
    }
    let value: unknown;
    try {
      value = spec.parse(e.value);
    } catch (err) {
      fail(e, `${(err as Error).message} (got ${JSON.stringify(e.value)})`);
      continue;
    }
    const max = spec.max;
    if (max !== undefined && typeof value === 'number' && value > max) {
      report.warnings.push(`${e.where}: ${e.value.trim()} s is above the maximum of ${max} s: ${max} s is used`);
      value = max;
    }
    (settings as unknown as Record<string, unknown>)[spec.field] = value;
  }
}

// Whether a bad entry may have been meant to choose the driver: DRIVER, URIS, or a misspelling (DRIVERS, URI).
function aboutDriver(key: string | undefined): boolean {
  return key !== undefined && /DRIVER|URI/.test(key);
}

// DRIVER or URIS is not known for sure: act through every driver (the good values given stay).
function unsureOfDriver(settings: Settings): void {
  settings.everyDriver = true;
}

function where(e: LayerEntry): { file?: string; line?: number; key?: string } {
  const w: { file?: string; line?: number; key?: string } = { key: e.key };
  if (e.file !== undefined) w.file = e.file;
  if (e.line !== undefined) w.line = e.line;
  return w;
}
