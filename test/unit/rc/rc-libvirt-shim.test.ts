// rc/rc.libvirt, the file installed as /etc/rc.d/rc.libvirt: it finds Node.js and the
// program, passes every argument through, and exits 5 with a message when either is missing.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const shim = join(import.meta.dirname, '../../../rc/rc.libvirt');
let dir: string;
let stubBundle: string;

// Runs the shim with /bin/sh, as Slackware's rc.local does (through its #! line).
function runShim(args: string[], env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(shim, args, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', ...env }, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rcl-shim-'));
  // A stand-in for the bundled program: prints the arguments it was given.
  stubBundle = join(dir, 'rc.libvirt.stub.cjs');
  writeFileSync(stubBundle, 'process.stdout.write(JSON.stringify(process.argv.slice(2)));\nprocess.exitCode = 3;\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rc/rc.libvirt', () => {
  it('is an executable POSIX sh script that doinst.sh can recognize', () => {
    expect(statSync(shim).mode & 0o777).toBe(0o755);
    const text = readFileSync(shim, 'utf8');
    expect(text.startsWith('#!/bin/sh\n')).toBe(true);
    expect(text).toMatch(/^# rc-libvirt shim/m);
    const syntax = spawnSync('sh', ['-n', shim], { encoding: 'utf8' });
    expect(syntax.status).toBe(0);
  });

  it('passes every argument through unchanged and returns the exit code of the program', () => {
    const args = ['--timeout', '60', 'stop', 'web server', "it's", '"q"', '--', '-x', '$HOME', '*'];
    const r = runShim(args, { RC_LIBVIRT_BUNDLE: stubBundle });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual(args);
    expect(r.status).toBe(3);
  });

  it('drops NODE_EXTRA_CA_CERTS (Node.js would parse those certificates at every start) and keeps the rest of the environment', () => {
    const envBundle = join(dir, 'env.stub.cjs');
    writeFileSync(envBundle, 'process.stdout.write(JSON.stringify([process.env.NODE_EXTRA_CA_CERTS ?? null, process.env.RC_TEST_KEEP ?? null]));\n');
    const r = runShim(['status'], { RC_LIBVIRT_BUNDLE: envBundle, NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt', RC_TEST_KEEP: 'kept' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([null, 'kept']);
    expect(r.status).toBe(0);
  });

  it('finds node on PATH first', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const fakeNode = join(bin, 'node');
    writeFileSync(fakeNode, '#!/bin/sh\necho "fake node: $*"\n');
    chmodSync(fakeNode, 0o755);
    const r = runShim(['start'], { RC_LIBVIRT_BUNDLE: stubBundle, PATH: `${bin}:/usr/bin:/bin` });
    expect(r.stdout).toBe(`fake node: --max-semi-space-size=2 ${stubBundle} start\n`);
    expect(r.status).toBe(0);
  });

  it('exits 5 naming Node.js when node is missing', () => {
    const r = runShim(['start'], { RC_LIBVIRT_BUNDLE: stubBundle, RC_LIBVIRT_NODE: join(dir, 'no-such-node') });
    expect(r.status).toBe(5);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Node.js is not installed');
    expect(r.stderr).toContain('no-such-node');
    expect(r.stderr).toContain('nodejs package');
  });

  it('exits 5 naming the program when the bundle is missing', () => {
    const missing = join(dir, 'no-such-bundle');
    const r = runShim(['stop'], { RC_LIBVIRT_BUNDLE: missing });
    expect(r.status).toBe(5);
    expect(r.stderr).toContain(`${missing} is missing`);
    expect(r.stderr).toContain('reinstall the rc-libvirt package');
  });

  it('works from the rc.local snippet of the libvirt README, unchanged but for the path', () => {
    const snippet = `if [ -x ${shim} ]; then\n  ${shim} start\nfi\n`;
    const r = spawnSync('sh', ['-c', snippet], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin', RC_LIBVIRT_BUNDLE: stubBundle },
    });
    expect(JSON.parse(r.stdout)).toEqual(['start']);
  });
});
