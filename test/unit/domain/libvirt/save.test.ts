// The libvirt save's abort path against a scripted libvirt: an abort that
// arrives before the save job exists, or while libvirt is still in a phase
// where QEMU's migration has not begun, must still stop the save.
import { describe, expect, it } from 'vitest';
import { InterruptedError, OperationRefusedError } from '../../../../src/domain/errors.js';
import { saveGuest } from '../../../../src/domain/libvirt/save.js';
import type { Virsh, VirshCall } from '../../../../src/domain/libvirt/virsh.js';
import type { GuestState } from '../../../../src/domain/types.js';
import { createMemoryLog } from '../../../../src/util/log.js';

/** How the scripted libvirt behaves. */
interface Script {
  /** ms from `managedsave` until its job exists (domjobabort before that: "no job"). */
  jobAfterMs: number;
  /** ms the save takes once the job exists. */
  saveMs: number;
  /** Job aborts accepted but without effect (libvirt had not started QEMU's migration yet). */
  ignoredAborts: number;
  /** The save fails by itself this many ms after its job exists (disk full...), leaving the guest paused as libvirt can. */
  failAfterMs?: number;
}

function scriptedLibvirt(s: Script): { virsh: Virsh; calls: string[]; state: () => GuestState } {
  const calls: string[] = [];
  let state: GuestState = 'running';
  let job: { cancel: () => void } | undefined;
  let ignored = 0;
  const run = (args: readonly string[], call: VirshCall): Promise<string> => {
    const sub = args[0] ?? '';
    calls.push(sub);
    if (sub === 'domjobabort') {
      if (!job) return Promise.reject(new OperationRefusedError('Requested operation is not valid: no job is active on the domain'));
      if (ignored < s.ignoredAborts) ignored++;
      else job.cancel();
      return Promise.resolve('');
    }
    if (sub === 'resume') {
      state = 'running';
      return Promise.resolve('');
    }
    if (sub !== 'managedsave') return Promise.reject(new Error(`unexpected virsh ${sub}`));
    return new Promise<string>((resolve, reject) => {
      const begin = setTimeout(() => {
        state = 'paused';
        call.onStderr?.('\rManagedsave: [  0 %]');
        const finish = s.failAfterMs === undefined
          ? setTimeout(() => {
            job = undefined;
            state = 'shutoff';
            call.onStderr?.('\rManagedsave: [100 %]');
            resolve('');
          }, s.saveMs)
          : setTimeout(() => {
            job = undefined;
            reject(new OperationRefusedError('operation failed: /var/lib/libvirt/qemu/save/g.save: No space left on device'));
          }, s.failAfterMs);
        job = {
          cancel: () => {
            clearTimeout(finish);
            job = undefined;
            reject(new OperationRefusedError('operation aborted: managed save job: canceled by client'));
          },
        };
      }, s.jobAfterMs);
      call.signal.addEventListener('abort', () => {
        clearTimeout(begin);
        reject(new InterruptedError('virsh killed'));
      }, { once: true });
    });
  };
  const virsh: Virsh = { uri: 'test:///x', program: 'virsh', callTimeoutMs: 5000, run, argv: (a) => ['virsh', ...a], env: () => ({}) };
  return { virsh, calls, state: () => state };
}

async function save(s: Script, abortAfterMs: number): Promise<{ err: unknown; calls: string[]; state: GuestState }> {
  const lv = scriptedLibvirt(s);
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(new Error('operator')), abortAfterMs);
  const err = await saveGuest(
    { virsh: lv.virsh, id: 'g', before: 'running', longMs: 60_000, log: createMemoryLog(), domstate: async () => ({ state: lv.state(), detail: lv.state() }) },
    { signal: ac.signal },
  ).catch((e: unknown) => e);
  clearTimeout(t);
  return { err, calls: lv.calls, state: lv.state() };
}

describe('libvirt save abort', () => {
  it('a save that fails by itself (not aborted) and leaves the guest paused resumes it, and reports the failure', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 1500, ignoredAborts: 0, failAfterMs: 50 }, 10_000);
    expect(r.err).toBeInstanceOf(OperationRefusedError);
    expect((r.err as Error).message).toMatch(/No space left on device/);
    expect(r.calls).toEqual(['managedsave', 'resume']);
    expect(r.state).toBe('running');
  });

  it('an abort that comes before the job exists still aborts it, and the guest runs', async () => {
    const r = await save({ jobAfterMs: 300, saveMs: 1500, ignoredAborts: 0 }, 20);
    expect(r.err).toBeInstanceOf(InterruptedError);
    // "no job" at first, then the abort that reached the job.
    expect(r.calls.filter((c) => c === 'domjobabort').length).toBeGreaterThanOrEqual(2);
    expect(r.state).toBe('running');
  });

  it('an abort libvirt accepted without effect is repeated until the save ends', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 1500, ignoredAborts: 2 }, 50);
    expect(r.err).toBeInstanceOf(InterruptedError);
    expect(r.calls.filter((c) => c === 'domjobabort')).toHaveLength(3);
    expect(r.state).toBe('running');
  });

  it('a save that completes before the abort reaches it is a completed save, and the aborts stop', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 100, ignoredAborts: 100 }, 30);
    expect(r.err).toBeUndefined();
    expect(r.state).toBe('shutoff');
    const n = r.calls.filter((c) => c === 'domjobabort').length;
    await new Promise((res) => setTimeout(res, 500));
    expect(r.calls.filter((c) => c === 'domjobabort')).toHaveLength(n);
  });
});
