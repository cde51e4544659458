// The built executable runs on its own: copied away from node_modules, it answers --help and --version.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const bundle = join(import.meta.dirname, '../../dist/rc.libvirt');
let dir: string;
let copy: string;

beforeAll(() => {
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run \`npm run build\` first (npm test does)`);
  dir = mkdtempSync(join(tmpdir(), 'rcl-bundle-'));
  copy = join(dir, 'rc.libvirt');
  copyFileSync(bundle, copy);
  execFileSync('chmod', ['0755', copy]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('dist/rc.libvirt', () => {
  it('is one executable node script', () => {
    expect(statSync(bundle).mode & 0o777).toBe(0o755);
    expect(readFileSync(bundle, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('runs --help and --version without node_modules nearby', () => {
    const help = spawnSync(copy, ['--help'], { cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('rc.libvirt guests_shutdown');
    const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    const version = spawnSync(copy, ['--version'], { cwd: dir, encoding: 'utf8' });
    expect(version.stdout.trim()).toBe(pkg.version);
  });

  it('prints for --help and -h the text yargs renders (built in at bundle time)', () => {
    const opts = { cwd: dir, encoding: 'utf8' as const, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } };
    // With a second argument the bundle goes through yargs; to a pipe both use 100 columns.
    const rendered = spawnSync(copy, ['--json', '--help'], opts);
    expect(rendered.status).toBe(0);
    expect(rendered.stdout).toContain('Exit codes:');
    expect(spawnSync(copy, ['--help'], opts).stdout).toBe(rendered.stdout);
    expect(spawnSync(copy, ['-h'], opts).stdout).toBe(rendered.stdout);
  });

  it('--help loads none of the modules a run needs (child processes, crypto, fs/promises)', () => {
    // Node.js lists every built-in module it has loaded in process.moduleLoadList.
    const probe = join(dir, 'probe.cjs');
    writeFileSync(probe, "process.on('exit', () => require('node:fs').writeSync(2, JSON.stringify(process.moduleLoadList)));\n");
    const r = spawnSync(process.execPath, ['-r', probe, copy, '--help'], { cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Exit codes:');
    const loaded = JSON.parse(r.stderr) as string[];
    expect(loaded).toContain('NativeModule fs');
    for (const m of ['child_process', 'crypto', 'fs/promises']) expect(loaded).not.toContain(`NativeModule ${m}`);
  });

  it('exits 2 on an unknown command', () => {
    const r = spawnSync(copy, ['bogus'], { cwd: dir, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command: bogus');
  });
});
