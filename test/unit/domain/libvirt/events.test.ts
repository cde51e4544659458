// The event stream's virsh process: close() ends it together with what it
// started (a VIRSH that is a wrapper script running virsh as its child), so
// no survivor holds the stream's pipes and keeps rc.libvirt from exiting.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createEventStream } from '../../../../src/domain/libvirt/events.js';
import { createVirsh } from '../../../../src/domain/libvirt/virsh.js';

// Whether a pid we started still runs (signal 0 is allowed for our own children's group only, so read /proc).
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

describe('event stream close()', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('ends the wrapper script and the program it runs as its child, and resolves', async () => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-events-'));
    const wrapper = join(dir, 'virsh-stand-in');
    const childPid = join(dir, 'child.pid');
    // Like a logging VIRSH wrapper: runs the stream as a child (no exec) and waits for it.
    writeFileSync(wrapper, `#!/bin/sh\nsleep 300 &\necho $! > '${childPid}'\nwait\n`);
    chmodSync(wrapper, 0o755);
    const stream = createEventStream({ virsh: createVirsh({ uri: 'qemu:///system', virsh: wrapper }), kind: 'lifecycle' });
    stream.ensure();
    const t0 = Date.now();
    let pid: number | undefined;
    while (pid === undefined && Date.now() - t0 < 10_000) {
      try {
        pid = Number(readFileSync(childPid, 'utf8').trim()) || undefined;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    expect(pid).toBeGreaterThan(0);
    expect(running(pid as number)).toBe(true);
    await stream.close();
    expect(stream.alive).toBe(false);
    const t1 = Date.now();
    while (running(pid as number) && Date.now() - t1 < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(running(pid as number)).toBe(false);
  });
});
