import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { deadline, DeadlineError, MAX_TIMER_MS, runController, sleep } from '../../../src/util/deadline.js';

describe('deadline listeners', () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(w);
  };
  afterEach(() => {
    process.off('warning', onWarning);
    warnings.length = 0;
  });

  const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

  it('50 deadlines on a run signal print no MaxListenersExceededWarning', async () => {
    process.on('warning', onWarning);
    const run = runController();
    const children = Array.from({ length: 50 }, () => deadline(60_000, run.signal));
    await settle();
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    run.abort(new Error('stop'));
    expect(children.every((c) => c.signal.aborted)).toBe(true);
  });

  it('50 deadlines on a deadline signal print no warning either', async () => {
    process.on('warning', onWarning);
    const parent = deadline(60_000);
    const children = Array.from({ length: 50 }, () => deadline(60_000, parent.signal));
    await settle();
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    for (const c of children) c.clear();
    parent.clear();
  });

  it('a plain AbortController still warns (the test can fail)', async () => {
    // Only this test hears the warning: node's own listener, which prints it, is put back afterwards.
    const printers = process.listeners('warning');
    process.removeAllListeners('warning');
    onTestFinished(() => {
      for (const p of printers) process.on('warning', p);
    });
    process.on('warning', onWarning);
    const plain = new AbortController();
    const children = Array.from({ length: 50 }, () => deadline(60_000, plain.signal));
    await settle();
    expect(warnings.map((w) => w.name)).toContain('MaxListenersExceededWarning');
    for (const c of children) c.clear();
  });
});

describe('deadlines of any duration', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('TIMEOUT=99999999 (s) does not fire at once: it fires after 99999999 s, not before', async () => {
    vi.useFakeTimers();
    const ms = 99_999_999 * 1000; // 46 times Node's setTimeout maximum
    const dl = deadline(ms);
    await vi.advanceTimersByTimeAsync(1000);
    expect(dl.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS * 3);
    expect(dl.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(ms - 1000 - MAX_TIMER_MS * 3 - 1);
    expect(dl.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(dl.signal.aborted).toBe(true);
    expect(dl.signal.reason).toBeInstanceOf(DeadlineError);
  });

  it('a deadline just above the timer maximum fires at its time', async () => {
    vi.useFakeTimers();
    const dl = deadline(MAX_TIMER_MS + 5);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS + 4);
    expect(dl.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(dl.signal.aborted).toBe(true);
  });

  it('clear() stops a chained deadline, also after its first link', async () => {
    vi.useFakeTimers();
    const dl = deadline(MAX_TIMER_MS * 2);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS + 10);
    dl.clear();
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS * 2);
    expect(dl.signal.aborted).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('Infinity never fires and holds no timer', async () => {
    vi.useFakeTimers();
    const dl = deadline(Infinity);
    let slept = false;
    void sleep(Infinity).then(() => (slept = true));
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS * 10);
    expect(dl.signal.aborted).toBe(false);
    expect(slept).toBe(false);
  });

  it('sleep() of more than the timer maximum resolves at its time, and an abort rejects it', async () => {
    vi.useFakeTimers();
    let slept = false;
    void sleep(MAX_TIMER_MS * 2 + 7).then(() => (slept = true));
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS * 2 + 6);
    expect(slept).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(slept).toBe(true);

    const ac = new AbortController();
    const p = sleep(MAX_TIMER_MS * 3, ac.signal);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS + 1);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
    expect(vi.getTimerCount()).toBe(0);
  });
});
