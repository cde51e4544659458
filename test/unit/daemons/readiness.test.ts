import { mkdtemp, rename, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../../src/config/settings.js';
import { socketAccepts, waitUntilAnswering, type ReadinessProbes } from '../../../src/daemons/readiness.js';

const live = new AbortController().signal;

// A libvirtd stand-in: its socket accepts from the `accepting`-th connect on, and it answers from the `answering`-th ask on.
function daemon(opts: { accepting?: number; answering?: number; diesAfterAsks?: number }) {
  const calls = { connects: 0, asks: 0, aliveChecks: 0 };
  const probes: ReadinessProbes = {
    socket: '/run/test/libvirt-sock',
    accepts: async () => (++calls.connects >= (opts.accepting ?? 1) ? undefined : '/run/test/libvirt-sock: ENOENT'),
    ask: async () => (++calls.asks >= (opts.answering ?? 1) ? undefined : 'virsh version: exit 1: error: failed to connect to the hypervisor'),
  };
  const stillRuns = async (): Promise<boolean> => {
    calls.aliveChecks++;
    return opts.diesAfterAsks === undefined || calls.asks < opts.diesAfterAsks;
  };
  return { calls, probes, stillRuns };
}

describe('waitUntilAnswering', () => {
  it('connects to the socket until it accepts, then asks virsh once', async () => {
    const d = daemon({ accepting: 4 });
    await expect(waitUntilAnswering(DEFAULTS, live, 5000, d.stillRuns, d.probes)).resolves.toEqual({ ok: true });
    expect(d.calls).toMatchObject({ connects: 4, asks: 1 });
  });

  it('asks again (without connecting again) while the accepting daemon does not answer yet', async () => {
    const d = daemon({ accepting: 1, answering: 3 });
    await expect(waitUntilAnswering(DEFAULTS, live, 5000, d.stillRuns, d.probes)).resolves.toEqual({ ok: true });
    expect(d.calls).toMatchObject({ connects: 1, asks: 3 });
  });

  it('ends at once when the daemon dies before its socket accepts, saying why', async () => {
    const d = daemon({ accepting: 1000, diesAfterAsks: 0 });
    const r = await waitUntilAnswering(DEFAULTS, live, 5000, d.stillRuns, d.probes);
    expect(r).toEqual({ ok: false, died: true, reason: 'its socket does not accept connections yet (/run/test/libvirt-sock: ENOENT)' });
    expect(d.calls).toMatchObject({ connects: 1, asks: 0, aliveChecks: 1 });
  });

  it('ends at once when the daemon dies after a failed ask, with virsh\'s words', async () => {
    const d = daemon({ answering: 1000, diesAfterAsks: 2 });
    const r = await waitUntilAnswering(DEFAULTS, live, 5000, d.stillRuns, d.probes);
    expect(r).toEqual({ ok: false, died: true, reason: 'virsh version: exit 1: error: failed to connect to the hypervisor' });
    expect(d.calls.asks).toBe(2);
  });

  it('asks virsh all the same once the socket was looked for long enough (a socket elsewhere)', async () => {
    const d = daemon({ accepting: Infinity });
    await expect(waitUntilAnswering(DEFAULTS, live, 5000, d.stillRuns, { ...d.probes, socketWaitMs: 50 })).resolves.toEqual({ ok: true });
    expect(d.calls.asks).toBe(1);
    expect(d.calls.connects).toBeGreaterThan(1);
  });

  it('gives up at the overall deadline with the last reason, the daemon still running', async () => {
    const d = daemon({ accepting: Infinity });
    const r = await waitUntilAnswering(DEFAULTS, live, 120, d.stillRuns, d.probes);
    expect(r).toEqual({ ok: false, died: false, reason: 'its socket does not accept connections yet (/run/test/libvirt-sock: ENOENT)' });
    expect(d.calls.asks).toBe(0);
  });

  it('says interrupted when its signal aborts', async () => {
    const d = daemon({ accepting: Infinity });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 30);
    const r = await waitUntilAnswering(DEFAULTS, ac.signal, 5000, d.stillRuns, d.probes);
    expect(r).toEqual({ ok: false, died: false, reason: 'interrupted' });
  });
});

describe('socketAccepts', () => {
  let dir: string | undefined;
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('is undefined for a listening socket, the errno for a missing or dead one', async () => {
    dir = await mkdtemp(join(tmpdir(), 'rcl-readiness-'));
    const path = join(dir, 'sock');
    expect(await socketAccepts(path, live)).toBe(`${path}: ENOENT`);
    const s = createServer((c) => c.destroy());
    server = s;
    await new Promise<void>((r) => s.listen(path, () => r()));
    expect(await socketAccepts(path, live)).toBeUndefined();
    await new Promise<void>((r) => s.close(() => r()));
    server = undefined;
    // A socket file nobody listens on any more (a daemon killed before it could remove it): moved aside before its server closes.
    const t = createServer();
    await new Promise<void>((r) => t.listen(join(dir as string, 'live'), () => r()));
    const stale = join(dir, 'stale');
    await rename(join(dir, 'live'), stale);
    await new Promise<void>((r) => t.close(() => r()));
    expect(await socketAccepts(stale, live)).toBe(`${stale}: ECONNREFUSED`);
  });
});
