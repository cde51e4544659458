import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createVirsh } from '../../../../src/domain/libvirt/virsh.js';
import {
  GuestNotFoundError,
  InterruptedError,
  NotReachableError,
  OperationRefusedError,
  ProtocolError,
  TimedOutError,
} from '../../../../src/domain/errors.js';
import { createMemoryLog } from '../../../../src/util/log.js';
import { writeFakeVirsh, type FakeVirsh } from './fake-virsh.js';

let fake: FakeVirsh | undefined;
afterEach(() => fake?.remove());

function runner(script: string, callTimeoutMs = 5000) {
  fake = writeFakeVirsh(script);
  return createVirsh({ uri: 'qemu:///system', virsh: fake.path, callTimeoutMs, hungWindowMs: callTimeoutMs, killGraceMs: 200 });
}
const signal = new AbortController().signal;

describe('virsh runner', () => {
  it('passes an argv array with -c URI and LC_ALL=C, and returns stdout', async () => {
    const v = runner("echo 'running (booted)'");
    const out = await v.run(['domstate', '--reason', '--domain=--dd web'], { signal });
    expect(out).toBe('running (booted)\n');
    const call = readFileSync(fake!.callsFile, 'utf8');
    expect(call).toBe('-q|-c|qemu:///system|domstate|--reason|--domain=--dd web| LC_ALL=C\n');
  });

  it('-v shows a batch of commands by its start and size; virsh still gets all of it', async () => {
    fake = writeFakeVirsh('echo ok');
    const log = createMemoryLog();
    const v = createVirsh({ uri: 'qemu:///system', virsh: fake.path, callTimeoutMs: 5000, log });
    const batch = Array.from({ length: 40 }, (_, i) => `dominfo --domain=guest-${i}`).join('; ');
    await v.run([batch], { signal });
    const shown = log.lines.filter((l) => l.level === 'debug' && l.msg.startsWith('run: ')).map((l) => l.msg);
    expect(shown).toEqual([`run: ${fake.path} -q -c qemu:///system ${batch.slice(0, 120)}… (40 commands, ${batch.length} bytes)`]);
    expect(readFileSync(fake.callsFile, 'utf8')).toBe(`-q|-c|qemu:///system|${batch}| LC_ALL=C\n`);
    await v.run(['domstate', '--domain=x'], { signal });
    expect(log.lines.at(-1)?.msg).toBe(`run: ${fake.path} -q -c qemu:///system domstate --domain=x`);
  });

  it.each([
    ["error: failed to get domain 'x'", GuestNotFoundError],
    ['error: Domain not found: no domain with matching uuid', GuestNotFoundError],
    ["error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory", NotReachableError],
    ['error: End of file while reading data: Input/output error', NotReachableError],
    ['error: Requested operation is not valid: domain is not running', OperationRefusedError],
    ['error: Domain is already active', OperationRefusedError],
    ['error: operation aborted: migration out job: canceled by client', InterruptedError],
    ['error: Timed out during operation: cannot acquire state change lock', TimedOutError],
  ])('classifies %j', async (message, kind) => {
    const v = runner(`printf '%s\\n' "${message.replace(/\n/g, '\\n')}" >&2; exit 1`);
    const err = await v.run(['dominfo', '--domain=x'], { signal, guest: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(kind);
    expect((err as Error).message).toContain(message.split('\n').pop()!.replace(/^error: /, ''));
  });

  it('keeps every error line of virsh in the message', async () => {
    const v = runner("echo 'error: Failed to destroy domain x' >&2; echo 'error: Requested operation is not valid: domain is not running' >&2; exit 1");
    const err = (await v.run(['destroy', '--domain=x'], { signal }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(OperationRefusedError);
    expect(err.message).toBe('-q -c qemu:///system destroy --domain=x: Failed to destroy domain x / Requested operation is not valid: domain is not running');
  });

  it('calls an exit status other than 0 and 1 a protocol error', async () => {
    const v = runner('echo garbage; exit 42');
    await expect(v.run(['list'], { signal })).rejects.toBeInstanceOf(ProtocolError);
  });

  it('calls a virsh that died of a signal a protocol error', async () => {
    const v = runner('kill -SEGV $$');
    await expect(v.run(['list'], { signal })).rejects.toThrow(/SIGSEGV/);
  });

  it('kills a hung virsh at its deadline and calls libvirt not reachable', async () => {
    const v = runner('exec sleep 600', 300);
    const err = (await v.run(['list'], { signal }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NotReachableError);
    expect(err.message).toMatch(/did not answer within 300 ms/);
  });

  it('calls a long operation past its deadline timed out', async () => {
    const v = runner('exec sleep 600');
    const err = await v.run(['managedsave', '--domain=x'], { signal, timeoutMs: 200, onDeadline: 'timed-out' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimedOutError);
  });

  it('fails a long call "not reachable" once libvirtd stops answering, long before its own deadline', async () => {
    // `start` runs long; `version` (the watchdog's question) hangs like a frozen libvirtd.
    const v = runner('exec sleep 600', 200);
    const err = (await v
      .run(['start', '--domain=x'], { signal, timeoutMs: 600_000, onDeadline: 'timed-out', watchdog: true })
      .catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NotReachableError);
    expect(err.message).toMatch(/stopped answering during start --domain=x: .*did not answer within 200 ms/);
  });

  it('lets a long call run on while libvirtd answers its watchdog slowly (within the window), and when a refusal is followed by an answer', async () => {
    const state = mkdtempSync(join(tmpdir(), 'rcl-watch-'));
    try {
      // version: the first refused at once, the others answer after 300 ms (longer than the call deadline, within the window).
      fake = writeFakeVirsh(`if [ "$4" = version ]; then if [ ! -e '${state}/once' ]; then : > '${state}/once'; echo 'error: failed to connect socket' >&2; exit 1; fi; sleep 0.3; echo ok; else sleep 2; echo done; fi`);
      const v = createVirsh({
        uri: 'qemu:///system',
        virsh: fake.path,
        callTimeoutMs: 150,
        hungWindowMs: 1000,
        killGraceMs: 200,
      });
      expect(await v.run(['start', '--domain=x'], { signal, timeoutMs: 600_000, watchdog: true })).toBe('done\n');
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('lets a long call run on while libvirtd answers', async () => {
    const v = runner('if [ "$4" = version ]; then echo ok; else sleep 1; echo done; fi', 150);
    expect(await v.run(['start', '--domain=x'], { signal, timeoutMs: 600_000, watchdog: true })).toBe('done\n');
    const calls = readFileSync(fake!.callsFile, 'utf8');
    expect(calls.match(/\|version\|/g)?.length).toBeGreaterThanOrEqual(2);
  });

  it('long calls at once share one watchdog: one `virsh version` at a time, not one per call', async () => {
    const v = runner('if [ "$4" = version ]; then echo ok; else sleep 1.5; echo done; fi', 150);
    const t0 = performance.now();
    const outs = await Promise.all([1, 2, 3, 4].map((i) => v.run(['start', `--domain=x${i}`], { signal, timeoutMs: 600_000, watchdog: true })));
    const took = performance.now() - t0;
    expect(outs).toEqual(['done\n', 'done\n', 'done\n', 'done\n']);
    const versions = readFileSync(fake!.callsFile, 'utf8').match(/\|version\|/g)?.length ?? 0;
    // One loop asks every 150 ms (each version takes some ms more): at most took / 150; four loops would ask four times that.
    expect(versions).toBeGreaterThanOrEqual(2);
    expect(versions).toBeLessThanOrEqual(Math.ceil(took / 150));
  });

  it('kills a virsh that ignores SIGTERM too', async () => {
    const v = runner("trap '' TERM; while :; do sleep 1; done", 200);
    await expect(v.run(['list'], { signal })).rejects.toBeInstanceOf(NotReachableError);
  });

  it('turns the caller aborting into InterruptedError', async () => {
    const v = runner('exec sleep 600');
    const ac = new AbortController();
    const p = v.run(['list'], { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('stop')), 100);
    await expect(p).rejects.toBeInstanceOf(InterruptedError);
  });

  it('says virsh is missing when it cannot run it', async () => {
    const v = createVirsh({ uri: 'qemu:///system', virsh: '/nonexistent/virsh' });
    await expect(v.run(['list'], { signal })).rejects.toThrow(/cannot run \/nonexistent\/virsh \(ENOENT\)/);
  });

  it('finds virsh on PATH by default', async () => {
    fake = writeFakeVirsh('echo on-path');
    const saved = process.env.PATH;
    process.env.PATH = `${fake.dir}:${saved ?? ''}`;
    try {
      expect(await createVirsh({ uri: 'test:///default' }).run(['uri'], { signal })).toBe('on-path\n');
    } finally {
      process.env.PATH = saved;
    }
  });
});
