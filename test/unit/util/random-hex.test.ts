import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { randomHex, readRandom } from '../../../src/util/random-hex.js';

describe('randomHex', () => {
  it('gives `bytes` random bytes as lower-case hex, a new value each call', () => {
    const a = randomHex(8);
    const b = randomHex(8);
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(randomHex(6)).toMatch(/^[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
  });
});

describe('readRandom', () => {
  it('reads the bytes from the kernel source', () => {
    const a = readRandom(16);
    expect(a?.length).toBe(16);
    expect(a?.equals(readRandom(16)!)).toBe(false);
  });

  it('gives nothing from a source that is missing or runs short (randomHex then asks node:crypto)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rcl-random-'));
    try {
      const short = join(dir, 'short');
      writeFileSync(short, 'abc');
      expect(readRandom(8, short)).toBeUndefined();
      expect(readRandom(8, join(dir, 'missing'))).toBeUndefined();
      expect(readRandom(3, short)?.toString()).toBe('abc');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
