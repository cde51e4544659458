import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Guest } from '../../../src/domain/types.js';
import type { GuestOutcome } from '../../../src/guests/outcome.js';
import { createProgress, guestLabel } from '../../../src/report/guest-progress.js';
import { createMemoryLog } from '../../../src/util/log.js';
import { formatSummary, reportSummary } from '../../../src/report/summary.js';

const guest = (name: string): Guest => ({
  id: name, name, uri: 'qemu:///system', state: 'running', stateDetail: 'running', memoryKiB: 1024, persistent: true,
  autostart: false, hasSavedImage: false, policy: {}, saveBlockers: [],
});
const outcome = (name: string, result: GuestOutcome['result'], reason = ''): GuestOutcome => ({
  guest: guest(name), action: 'save', result, reason, ms: 1500, stateBefore: 'running',
});

function sink(isTTY: boolean) {
  const s = new PassThrough() as PassThrough & { isTTY?: boolean };
  s.isTTY = isTTY;
  let text = '';
  s.on('data', (b: Buffer) => (text += b.toString()));
  return { s, text: () => text };
}

describe('guest progress', () => {
  it('quotes names with spaces or a leading dash and escapes control characters', () => {
    expect(guestLabel({ name: 'web', uri: '' })).toBe('web');
    expect(guestLabel({ name: 'a b', uri: '' })).toBe("'a b'");
    expect(guestLabel({ name: '-x', uri: '' })).toBe("'-x'");
    expect(guestLabel({ name: 'e\u001b[2J', uri: '' })).toBe('e\\x1b[2J');
  });

  it('writes one plain line per event when not on a terminal, and records them to syslog', () => {
    const log = createMemoryLog();
    const out = sink(false);
    const p = createProgress({ out: out.s, log });
    p.begin(guest('a b'), 'save');
    p.progress(guest('a b'), 0.3);
    p.progress(guest('a b'), 0.35);
    p.progress(guest('a b'), 0.6);
    p.end(outcome('a b', 'saved'));
    p.stop();
    expect(log.lines.filter((l) => l.level === 'info').map((l) => l.msg)).toEqual(["'a b': save", "'a b': save 30 %", "'a b': save 60 %", "'a b': saved (1.5 s)"]);
    expect(out.text()).toBe('');
  });

  it('redraws a live line per guest in place on a terminal', () => {
    const log = createMemoryLog();
    const out = sink(true);
    const p = createProgress({ out: out.s, log });
    p.begin(guest('a'), 'save');
    p.begin(guest('b'), 'save');
    p.progress(guest('a'), 0.5);
    p.end(outcome('b', 'saved'));
    p.stop();
    const t = out.text();
    expect(t).toContain('\x1b[2A');
    expect(t).toMatch(/a {2}save 50 %/);
    expect(t).toMatch(/b {2}saved/);
    expect(log.lines.filter((l) => l.level === 'info')).toEqual([]);
  });
});

describe('summary', () => {
  it('prints a table and a total, names destroyed and failed guests, and is clean only without them', () => {
    const log = createMemoryLog();
    const out = sink(false);
    const r = reportSummary('guests stopped', [outcome('a', 'saved'), outcome('b c', 'destroyed', 'did not shut down within 5 s'), outcome('d', 'failed', 'x')], 3000, out.s, log);
    expect(r).toEqual({ clean: false, destroyed: ['b c'], failed: ['d'] });
    expect(out.text()).toMatch(/^GUEST +ACTION +RESULT +SECONDS +REASON\n/);
    expect(out.text()).toMatch(/'b c' +save +destroyed +1\.5 +did not shut down within 5 s/);
    expect(out.text()).toContain('guests stopped: 3 guests in 3.0 s: 1 saved, 1 destroyed, 1 failed');
    expect(log.lines.some((l) => l.level === 'warn' && l.msg.includes("'b c'"))).toBe(true);
    expect(reportSummary('x', [outcome('a', 'saved')], 1, out.s, log).clean).toBe(true);
    expect(formatSummary('x', [], 0)).toBe('x: no guests to act on');
  });

  it('with -q prints nothing when every guest went as planned, and the whole table when one did not; syslog gets every line either way', () => {
    const recorded: string[] = [];
    const log = { ...createMemoryLog(), record: (_level: string, msg: string) => recorded.push(msg) };
    const calm = sink(false);
    expect(reportSummary('guests stopped', [outcome('a', 'saved')], 1000, calm.s, log, false, true).clean).toBe(true);
    expect(calm.text()).toBe('');
    expect(recorded).toEqual(['a: save saved in 1.5 s', 'guests stopped: 1 guest in 1.0 s: 1 saved']);
    const bad = sink(false);
    reportSummary('guests stopped', [outcome('a', 'saved'), outcome('d', 'failed', 'x')], 1000, bad.s, log, false, true);
    expect(bad.text()).toMatch(/^GUEST +ACTION/);
    expect(bad.text()).toContain('1 saved, 1 failed');
  });
});
