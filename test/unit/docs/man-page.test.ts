// docs/rc.libvirt.8 renders without warnings and covers the whole interface:
// every command, option, setting and exit code.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMANDS } from '../../../src/cli/commands.js';
import { EXIT } from '../../../src/cli/exit-codes.js';
import { SETTING_KEYS } from '../../../src/config/setting-keys.js';

const page = join(import.meta.dirname, '../../../docs/rc.libvirt.8');
const source = readFileSync(page, 'utf8');

// The rendered text between two section headings.
function section(text: string, from: string, to: string): string {
  const start = text.indexOf(`\n${from}\n`);
  const end = text.indexOf(`\n${to}\n`);
  expect(start, `section ${from}`).toBeGreaterThan(0);
  expect(end, `section ${to}`).toBeGreaterThan(start);
  return text.slice(start, end);
}

// groff prints man(7) text without adjustment or hyphenation, so words can be searched.
function render(): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('groff', ['-man', '-ww', '-Tutf8', '-rLL=200n', '-dAD=l', '-rHY=0', page], { encoding: 'utf8', timeout: 20_000 });
  if (r.error) throw new Error(`groff cannot run (${r.error.message}): install groff-base (node testbed/setup.mjs does)`);
  return { status: r.status, stdout: r.stdout.replace(/.\x08/g, ''), stderr: r.stderr };
}

describe('docs/rc.libvirt.8', () => {
  it('renders with groff -man -ww without a warning', () => {
    const r = render();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const z = spawnSync('groff', ['-man', '-ww', '-z', page], { encoding: 'utf8' });
    expect(z.stderr).toBe('');
  });

  it('has the sections a man page needs', () => {
    const sections = [...source.matchAll(/^\.SH (.+)$/gm)].map((m) => (m[1] as string).replace(/"/g, ''));
    for (const s of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'OPTIONS', 'SETTINGS', 'PER-GUEST POLICY', 'FILES', 'EXIT STATUS', 'EXAMPLES', 'SEE ALSO']) {
      expect(sections).toContain(s);
    }
  });

  it('describes every command of the CLI', () => {
    const text = render().stdout;
    const commands = section(text, 'COMMANDS', 'OPTIONS');
    for (const c of COMMANDS) expect(commands).toMatch(new RegExp(`^ {7}${c.name}\\b`, 'm'));
  });

  it('describes every setting', () => {
    const text = render().stdout;
    const settings = section(text, 'SETTINGS', 'PER-GUEST POLICY');
    for (const name of Object.keys(SETTING_KEYS)) expect(settings).toContain(name);
  });

  it('lists every exit code and every option of --help', () => {
    const text = render().stdout;
    const exit = section(text, 'EXIT STATUS', 'EXAMPLES');
    for (const code of Object.values(EXIT)) expect(exit).toMatch(new RegExp(`^ {7}${code}\\b`, 'm'));
    for (const opt of ['--config', '--timeout', '--parallel', '--on-shutdown', '--on-boot', '--start-delay', '--driver', '--uri', '--guests-dir', '--dry-run', '--json', '--quiet', '--verbose', '--help', '--version']) {
      expect(text).toContain(opt);
    }
  });
});
