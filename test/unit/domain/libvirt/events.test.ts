// The event stream's close() with a VIRSH that is a wrapper script: the
// wrapper does not exec virsh, so killing the wrapper alone would leave its
// child holding the stream's pipes, and the run would never end. The stand-in
// is the test's own sh script in its temp directory: it starts a child (the
// "virsh") that loops until the test's stop file exists, so whatever happens,
// every process ends when the test does.
import { existsSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createEventStream } from '../../../../src/domain/libvirt/events.js';
import type { Virsh } from '../../../../src/domain/libvirt/virsh.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-events-'));
const stop = join(dir, 'stop');
const gone = join(dir, 'gone');
afterAll(() => {
  writeFileSync(stop, '');
  rmSync(dir, { recursive: true, force: true });
});

describe('event stream', () => {
  it('close() ends a wrapper and the virsh it started, and lets go of the pipes: nothing keeps the run alive', async () => {
    const wrapper = join(dir, 'virsh-wrapper');
    // The "virsh": ends on SIGTERM (as virsh does) or when the stop file appears; notes its end.
    writeFileSync(wrapper, `#!/bin/sh\nsh -c 'trap ": > ${gone}; exit 0" TERM; while [ ! -e ${stop} ]; do sleep 0.05; done; : > ${gone}' \nexit $?\n`);
    chmodSync(wrapper, 0o755);
    const virsh = { uri: 'test:///x', argv: (a: readonly string[]) => [wrapper, ...a], env: () => process.env } as unknown as Virsh;
    const stream = createEventStream({ virsh, kind: 'lifecycle' });
    stream.ensure();
    await new Promise((r) => setTimeout(r, 300));
    expect(stream.alive).toBe(true);
    await stream.close();
    expect(stream.alive).toBe(false);
    for (let i = 0; i < 40 && !existsSync(gone); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(gone)).toBe(true);
  });
});
