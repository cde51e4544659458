// etc/default-libvirt, shipped as /etc/default/libvirt: every setting is there, commented out
// with its real default, so the file changes nothing until edited (but VIRTUSER/VIRTGROUP).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULTS } from '../../../src/config/settings.js';
import { SETTING_FIELDS, SETTING_NAMES } from '../../helpers/setting-names.js';

const template = readFileSync(join(import.meta.dirname, '../../../etc/default-libvirt'), 'utf8');

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
    expect([...all.keys()].sort()).toEqual([...SETTING_NAMES].sort());
  });

  it('sets only VIRTUSER and VIRTGROUP, to the defaults', () => {
    const active = assignments(template, false);
    expect([...active.keys()].sort()).toEqual(['VIRTGROUP', 'VIRTUSER']);
    expect(active.get('VIRTUSER')).toBe(DEFAULTS.virtUser);
    expect(active.get('VIRTGROUP')).toBe(DEFAULTS.virtGroup);
  });

  it('shows the real default of every commented setting', () => {
    for (const [key, value] of assignments(template, true)) {
      const field = SETTING_FIELDS[key as keyof typeof SETTING_FIELDS];
      const def: unknown = DEFAULTS[field];
      const shown = Array.isArray(def) ? def.join(' ') : String(def);
      expect(value, key).toBe(shown);
    }
  });

  it('has nothing but comments, blank lines and KEY=value lines', () => {
    for (const line of template.split('\n')) {
      expect(line === '' || line.startsWith('#') || /^[A-Z_]+=\S+$/.test(line), line).toBe(true);
    }
  });
});
