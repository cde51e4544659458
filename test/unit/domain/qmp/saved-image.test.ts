import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../../../../src/domain/errors.js';
import { hasImage, readSidecar, removeStalePartials, savedImagePaths, writeSidecar } from '../../../../src/domain/qmp/saved-image.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-saved-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('saved images', () => {
  it('round-trips the sidecar and sees only complete images', async () => {
    const p = savedImagePaths(dir, 'web');
    expect(await hasImage(p)).toBe(false);
    expect(await readSidecar(p)).toBeUndefined();
    await writeSidecar(p, { version: 1, name: 'web', wasRunning: false, savedAt: 1 });
    expect(await readSidecar(p)).toEqual({ version: 1, name: 'web', wasRunning: false, savedAt: 1 });
    writeFileSync(p.temp(), 'partial');
    expect(await hasImage(p)).toBe(false);
    writeFileSync(p.image, 'image');
    expect(await hasImage(p)).toBe(true);
  });

  it('names a malformed sidecar', async () => {
    const p = savedImagePaths(dir, 'bad');
    writeFileSync(p.sidecar, '{"wasRunning": "yes"}');
    await expect(readSidecar(p)).rejects.toBeInstanceOf(ProtocolError);
    await expect(readSidecar(p)).rejects.toThrow(`${p.sidecar}: wasRunning`);
    writeFileSync(p.sidecar, 'nope');
    await expect(readSidecar(p)).rejects.toThrow(/not valid JSON/);
  });

  it('removes only this guest\'s stale partial files', async () => {
    const a = savedImagePaths(dir, 'a');
    const ab = savedImagePaths(dir, 'ab');
    writeFileSync(a.temp(), '');
    writeFileSync(ab.temp(), '');
    await removeStalePartials(a);
    const left = readdirSync(dir).filter((f) => f.includes('partial'));
    expect(left.some((f) => f.startsWith('.a.save.partial-'))).toBe(false);
    expect(left.some((f) => f.startsWith('.ab.save.partial-'))).toBe(true);
  });
});

describe('the restore marker', () => {
  it('marks, takes back, and moves a marked image aside under a dated name, never deleting it', async () => {
    const { markRestoring, unmarkRestoring, moveMarkedAside, hasRestoringMarker } = await import('../../../../src/domain/qmp/saved-image.js');
    const sub = mkdtempSync(join(tmpdir(), 'rcl-marker-'));
    try {
      const p = savedImagePaths(sub, 'db');
      writeFileSync(p.image, 'state');
      await markRestoring(p);
      expect(readdirSync(sub)).toEqual(['db.save.restoring']);
      expect(await hasImage(p)).toBe(false);
      expect(await hasRestoringMarker(p)).toBe(true);
      await unmarkRestoring(p);
      expect(readdirSync(sub)).toEqual(['db.save']);
      await markRestoring(p);
      const aside = await moveMarkedAside(p, new Date('2026-11-30T15:00:00.123Z'));
      expect(aside).toBe(join(sub, 'db.save.used-2026-11-30T15-00-00-123Z'));
      expect(readdirSync(sub)).toEqual(['db.save.used-2026-11-30T15-00-00-123Z']);
      expect(await hasRestoringMarker(p)).toBe(false);
    } finally {
      rmSync(sub, { recursive: true, force: true });
    }
  });
});
