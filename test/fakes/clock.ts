// Fake timers for a describe block: every test runs on vitest's fake clock
// (the drivers' scripted delays and the code's deadlines alike), and `t0` is
// the clock's reading when the test began.
import { afterEach, beforeEach, vi } from 'vitest';

/** Use fake timers in each test of the enclosing block; `t0` is performance.now() at its start. */
export function fakeClock(): { readonly t0: number } {
  let t0 = 0;
  beforeEach(() => {
    vi.useFakeTimers();
    t0 = performance.now();
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  return {
    get t0() {
      return t0;
    },
  };
}
