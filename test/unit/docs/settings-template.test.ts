// etc/default-libvirt, shipped as /etc/default/libvirt: every setting is there, commented out
// with its real default, so the file changes nothing until edited.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadSettings } from '../../../src/config/load.js';
import { SETTING_KEYS, type SettingKey } from '../../../src/config/setting-keys.js';
import { DEFAULTS } from '../../../src/config/settings.js';

const path = join(import.meta.dirname, '../../../etc/default-libvirt');
const template = readFileSync(path, 'utf8');
// The file cannot name another settings file; LIBVIRT_OPTS is the old name of LIBVIRTD_OPTS.
const FILE_SETTINGS = Object.keys(SETTING_KEYS).filter((k) => k !== 'RC_LIBVIRT_CONFIG' && k !== 'LIBVIRT_OPTS');

// KEY=value with optional quotes, as the settings file format allows.
function assignments(text: string, commented: boolean): Map<string, string> {
  const re = commented ? /^#([A-Z_]+)=(.*)$/gm : /^([A-Z_]+)=(.*)$/gm;
  const out = new Map<string, string>();
  for (const m of text.matchAll(re)) {
    const key = m[1] as string;
    expect(out.has(key), `${key} appears twice`).toBe(false);
    out.set(key, (m[2] as string).replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1'));
  }
  return out;
}

describe('the settings template', () => {
  it('lists every setting exactly once', () => {
    const all = new Map([...assignments(template, true), ...assignments(template, false)]);
    expect([...all.keys()].sort()).toEqual([...FILE_SETTINGS].sort());
  });

  it('sets nothing: every setting is commented out', () => {
    expect([...assignments(template, false).keys()]).toEqual([]);
  });

  it('shows the real default of every commented setting', () => {
    for (const [key, value] of assignments(template, true)) {
      const def: unknown = DEFAULTS[SETTING_KEYS[key as SettingKey].field];
      const shown = Array.isArray(def) ? def.join(' ') : String(def);
      expect(value, key).toBe(shown);
    }
  });

  it('is read by rc.libvirt as the defaults, unchanged', async () => {
    const settings = await loadSettings({ options: { config: path, dryRun: false, json: false, verbosity: 0 }, env: {} });
    expect(settings).toEqual({ ...DEFAULTS, configFile: path });
  });

  it('gives the defaults with every commented line uncommented', async () => {
    const uncommented = template.replace(/^#([A-Z_]+=)/gm, '$1');
    const settings = await loadSettings({
      options: { config: '/etc/default/libvirt', dryRun: false, json: false, verbosity: 0 },
      env: {},
      readFile: async () => uncommented,
    });
    expect(settings).toEqual({ ...DEFAULTS, configFile: '/etc/default/libvirt' });
  });
});
