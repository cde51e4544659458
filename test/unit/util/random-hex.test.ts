import { describe, expect, it } from 'vitest';
import { randomHex } from '../../../src/util/random-hex.js';

describe('randomHex', () => {
  it('gives `bytes` random bytes as lower-case hex, a new value each call', () => {
    const a = randomHex(8);
    const b = randomHex(8);
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(randomHex(6)).toMatch(/^[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
  });
});
