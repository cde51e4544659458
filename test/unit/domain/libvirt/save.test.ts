// The libvirt save's abort path against a scripted libvirt: an abort that
// arrives before the save job exists, or while libvirt is still in a phase
// where QEMU's migration has not begun, must still stop the save.
import { describe, expect, it } from 'vitest';
import { InterruptedError, OperationRefusedError } from '../../../../src/domain/errors.js';
import { saveGuest, stateAsSaveBegan } from '../../../../src/domain/libvirt/save.js';
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
  /** The guest's state before the save: running (default) or paused by its admin. */
  initial?: 'running' | 'paused';
  /** ms until the `domstate` asked alongside the save answers (default 0); `fail`: it fails. */
  domstateAfterMs?: number | 'fail';
}

function scriptedLibvirt(s: Script): { virsh: Virsh; calls: string[]; state: () => GuestState; domstate: () => Promise<{ state: GuestState; detail: string }> } {
  const calls: string[] = [];
  let state: GuestState = s.initial ?? 'running';
  // libvirt's reason as `domstate --reason` prints it.
  let reason = s.initial === 'paused' ? 'user' : 'booted';
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
      reason = 'unpaused';
      return Promise.resolve('');
    }
    if (sub !== 'managedsave') return Promise.reject(new Error(`unexpected virsh ${sub}`));
    return new Promise<string>((resolve, reject) => {
      const begin = setTimeout(() => {
        // libvirt pauses a running guest for its save (reason `saving`); a paused one keeps its reason.
        if (state === 'running') reason = 'saving';
        state = 'paused';
        call.onStderr?.('\rManagedsave: [  0 %]');
        const finish = s.failAfterMs === undefined
          ? setTimeout(() => {
            job = undefined;
            state = 'shutoff';
            reason = 'saved';
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
  const domstate = async (): Promise<{ state: GuestState; detail: string }> => ({ state, detail: `${state} (${reason})` });
  const asked = (): Promise<{ state: GuestState; detail: string }> => {
    const after = s.domstateAfterMs ?? 0;
    if (after === 'fail') return Promise.reject(new OperationRefusedError('cannot read the state'));
    return new Promise((resolve) => setTimeout(() => resolve(domstate()), after));
  };
  return { virsh, calls, state: () => state, domstate: asked };
}

async function save(s: Script, abortAfterMs: number): Promise<{ err: unknown; calls: string[]; state: GuestState; log: string[] }> {
  const lv = scriptedLibvirt(s);
  const ac = new AbortController();
  const log = createMemoryLog();
  const t = setTimeout(() => ac.abort(new Error('operator')), abortAfterMs);
  // As the driver does: the state before the save is asked alongside it.
  const before = (): Promise<GuestState | undefined> => stateAsSaveBegan(lv.domstate());
  const err = await saveGuest(
    { virsh: lv.virsh, id: 'g', before, longMs: 60_000, log, domstate: async () => ({ state: lv.state(), detail: lv.state() }) },
    { signal: ac.signal },
  ).catch((e: unknown) => e);
  clearTimeout(t);
  return { err, calls: lv.calls, state: lv.state(), log: log.lines.map((e) => `${e.level}: ${e.msg}`) };
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

  it('the state asked alongside the save, answered once the save has paused the guest (paused, saving), counts as running: a failed save resumes it', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 1500, ignoredAborts: 0, failAfterMs: 100, domstateAfterMs: 50 }, 10_000);
    expect(r.err).toBeInstanceOf(OperationRefusedError);
    expect(r.calls).toEqual(['managedsave', 'resume']);
    expect(r.state).toBe('running');
  });

  it('a guest its admin had paused stays paused after a failed save', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 1500, ignoredAborts: 0, failAfterMs: 50, initial: 'paused', domstateAfterMs: 30 }, 10_000);
    expect(r.err).toBeInstanceOf(OperationRefusedError);
    expect(r.calls).toEqual(['managedsave']);
    expect(r.state).toBe('paused');
  });

  it('when its state before the save cannot be read, a guest a failed save left paused is left paused, and the error says why', async () => {
    const r = await save({ jobAfterMs: 10, saveMs: 1500, ignoredAborts: 0, failAfterMs: 50, domstateAfterMs: 'fail' }, 10_000);
    expect(r.err).toBeInstanceOf(OperationRefusedError);
    expect(r.calls).toEqual(['managedsave']);
    expect(r.state).toBe('paused');
    expect(r.log.some((l) => /^error: .*paused .* state before the save could not be read: left paused/.test(l))).toBe(true);
  });
});

describe('stateAsSaveBegan', () => {
  const of = (state: GuestState, detail: string): Promise<GuestState | undefined> => stateAsSaveBegan(Promise.resolve({ state, detail }));

  it('reads a guest the save has paused already as running, and keeps any other state', async () => {
    expect(await of('paused', 'paused (saving)')).toBe('running');
    expect(await of('paused', 'paused (user)')).toBe('paused');
    expect(await of('running', 'running (booted)')).toBe('running');
  });

  it('does not tell when the save has taken the guest off already, or the call failed', async () => {
    expect(await of('shutoff', 'shut off (saved)')).toBeUndefined();
    expect(await stateAsSaveBegan(Promise.reject(new Error('no answer')))).toBeUndefined();
  });
});
