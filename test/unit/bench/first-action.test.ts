// The bench's reading of spawn → first guest action from our program's stamped output.
import { describe, expect, it } from 'vitest';
import { addFirstAction, firstActionAfterAnswerMs, firstActionMs, type FirstActionSamples } from '../../../bench/lib/first-action.js';
import { roundOrder } from '../../../bench/scenarios/stop-start.js';

const UUID = '0f8e2c1a-58b4-4c39-9a0d-3f1b2e4d5c6a';

describe('firstActionMs', () => {
  it('takes the -v line of the first managedsave, not the listing before it', () => {
    const trace: [number, string][] = [
      [80, `run: virsh -q -c qemu:///system list --all --uuid`],
      [95, `run: virsh -q -c qemu:///system dumpxml --domain=${UUID}`],
      [142, `run: virsh -q -c qemu:///system managedsave --verbose --domain=${UUID}`],
      [150, 'rcl-bench-1: save'],
      [900, 'rcl-bench-1: saved (0.8 s)'],
    ];
    expect(firstActionMs(trace)).toBe(142);
  });

  it('takes the call itself when the progress line came first (a state check before the save)', () => {
    const trace: [number, string][] = [
      [547, 'rcl-bench-1: save'],
      [549, `run: virsh -q -c qemu:///system domstate --reason --domain=${UUID}`],
      [597, `run: virsh -q -c qemu:///system managedsave --verbose --domain=${UUID}`],
    ];
    expect(firstActionMs(trace)).toBe(597);
  });

  it('takes a shutdown request or a restore (virsh start) the same way', () => {
    expect(firstActionMs([[10, 'run: virsh -q -c qemu:///system version'], [120, `run: virsh -q -c qemu:///system shutdown --domain=${UUID}`]])).toBe(120);
    expect(firstActionMs([[10, 'run: virsh -q -c qemu:///system net-start default'], [400, `run: virsh -q -c qemu:///system start --domain=${UUID}`]])).toBe(400);
  });

  it('falls back to the first progress line when the run was not verbose', () => {
    expect(firstActionMs([[60, 'stop: 2 guests'], [131, 'rcl-bench-2: shutdown'], [133, 'rcl-bench-1: shutdown']])).toBe(131);
    expect(firstActionMs([[300, 'libvirtd answers'], [352, 'web: restore']])).toBe(352);
  });

  it('has no answer for a run that never acted on a guest', () => {
    expect(firstActionMs([[50, 'stop: no guests run'], [60, 'rcl-bench-1: saved (0.8 s)'], [70, 'run: virsh -q -c qemu:///system list --all --uuid']])).toBeUndefined();
    expect(firstActionMs([])).toBeUndefined();
  });
});

describe('firstActionAfterAnswerMs', () => {
  it('counts from libvirtd answering to the first restore', () => {
    const trace: [number, string][] = [[40, 'starting virtlockd'], [330, 'libvirtd answers (0.29 s)'], [410, `run: virsh -q -c qemu:///system start --domain=${UUID}`]];
    expect(firstActionAfterAnswerMs(trace)).toBe(80);
  });

  it('has no answer without either line', () => {
    expect(firstActionAfterAnswerMs([[410, `run: virsh -q -c qemu:///system start --domain=${UUID}`]])).toBeUndefined();
    expect(firstActionAfterAnswerMs([[330, 'libvirtd answers']])).toBeUndefined();
  });
});

describe('addFirstAction', () => {
  it('adds what a run has, and the time after the answer only for start', () => {
    const s: FirstActionSamples = { ms: [], afterAnswerMs: [] };
    const start: [number, string][] = [[300, 'libvirtd answers'], [350, 'a: restore']];
    addFirstAction(s, start);
    addFirstAction(s, start, true);
    addFirstAction(s, [[10, 'nothing']], true);
    expect(s).toEqual({ ms: [350, 350], afterAnswerMs: [50] });
  });
});

describe('roundOrder', () => {
  it('rotates so each runs first in turn', () => {
    const all = ['floor', 'ours', 'libvirt-guests'];
    expect([1, 2, 3, 4].map((rep) => roundOrder(all, rep))).toEqual([
      ['floor', 'ours', 'libvirt-guests'],
      ['ours', 'libvirt-guests', 'floor'],
      ['libvirt-guests', 'floor', 'ours'],
      ['floor', 'ours', 'libvirt-guests'],
    ]);
  });
});
