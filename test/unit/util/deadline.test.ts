import { afterEach, describe, expect, it } from 'vitest';
import { deadline, runController } from '../../../src/util/deadline.js';

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
    process.on('warning', onWarning);
    const plain = new AbortController();
    const children = Array.from({ length: 50 }, () => deadline(60_000, plain.signal));
    await settle();
    expect(warnings.map((w) => w.name)).toContain('MaxListenersExceededWarning');
    for (const c of children) c.clear();
  });
});
