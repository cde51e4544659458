import { describe, expect, it } from 'vitest';
import {
  createSectionReader,
  parseDominfo,
  parseDomstate,
  parseEventLine,
  parseJobInfo,
  parseUuidList,
  parseVerbosePercents,
} from '../../../../src/domain/libvirt/parse.js';
import { ProtocolError } from '../../../../src/domain/errors.js';

const DOMINFO = `Id:             -
Name:           web server: a name
UUID:           084149E7-9171-411b-a0a7-4233aaefdf57
OS Type:        hvm
State:          shut off
CPU(s):         1
Max memory:     131072 KiB
Used memory:    131072 KiB
Persistent:     yes
Autostart:      disable
Managed save:   yes
Security model: none
Security DOI:   0
`;

describe('virsh output parsers', () => {
  it('reads dominfo, names with colons included', () => {
    expect(parseDominfo(DOMINFO)).toEqual({
      name: 'web server: a name',
      uuid: '084149e7-9171-411b-a0a7-4233aaefdf57',
      state: 'shut off',
      maxMemoryKiB: 131072,
      persistent: true,
      autostart: false,
      managedSave: true,
    });
  });

  it('names the field dominfo lacks or garbles', () => {
    expect(() => parseDominfo('garbage\n', 'dominfo of x')).toThrow(/dominfo of x: no "uuid" field/);
    expect(() => parseDominfo(DOMINFO.replace('Persistent:     yes', 'Persistent:     maybe'))).toThrow(/"persistent" is "maybe"/);
    expect(() => parseDominfo(DOMINFO.replace('131072 KiB\nUsed', 'lots\nUsed'))).toThrow(ProtocolError);
  });

  it('reads domstate --reason', () => {
    expect(parseDomstate('paused (user)\n\n')).toEqual({ state: 'paused', detail: 'paused (user)' });
    expect(parseDomstate('shut off (saved)\n')).toEqual({ state: 'shutoff', detail: 'shut off (saved)' });
    expect(parseDomstate('in shutdown (user)\n').state).toBe('running');
    expect(parseDomstate('crashed (panicked)\n').state).toBe('other');
    expect(() => parseDomstate('flying (high)\n')).toThrow(/unknown domain state "flying"/);
    expect(() => parseDomstate('')).toThrow(ProtocolError);
  });

  it('reads list --uuid and refuses anything else', () => {
    expect(parseUuidList('084149e7-9171-411b-a0a7-4233aaefdf57\n\n')).toEqual(['084149e7-9171-411b-a0a7-4233aaefdf57']);
    expect(() => parseUuidList(' Id   Name   State\n')).toThrow(/not a UUID/);
  });

  it('reads save progress from domjobinfo and --verbose', () => {
    const p = parseJobInfo(`Job type:         Unbounded
Operation:        Save
Time elapsed:     550          ms
Data processed:   32.000 MiB
Data remaining:   96.000 MiB
Data total:       128.000 MiB
`);
    expect(p).toEqual({ fraction: 0.25, processedBytes: 32 * 1024 ** 2, totalBytes: 128 * 1024 ** 2 });
    expect(parseJobInfo('Job type:         None\n')).toBeUndefined();
    expect(parseVerbosePercents('\rManagedsave: [  0 %]\rManagedsave: [ 30 %]\rManagedsave: [100 %]')).toEqual([0, 30, 100]);
  });

  it('reads event lines, names up to the last quote-colon', () => {
    expect(parseEventLine("2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'it's': odd': Stopped Saved")).toEqual({
      kind: 'lifecycle',
      name: "it's': odd",
      event: 'Stopped',
      detail: 'Saved',
      time: Date.parse('2026-11-26T22:47:35.695+00:00'),
    });
    expect(parseEventLine("event 'reboot' for domain '--dd'")).toEqual({ kind: 'reboot', name: '--dd', event: '', detail: '' });
    expect(parseEventLine("2026-11-26 22:48:41.975+0000: event 'lifecycle' for domain '-dash': Shutdown Finished after guest request")?.detail).toBe(
      'Finished after guest request',
    );
    expect(parseEventLine('events received: 3')).toBeUndefined();
  });

  it('splits a batch\'s output at its marks, whatever the chunks: only sections closed by their next mark, empty ones included', () => {
    const mark = (i: number): string => `@@rcl-ab12-${i}@@`;
    const out = `junk${mark(0)}Name: web\n${mark(1)}${mark(2)}<domain/>\n${mark(3)}never closed`;
    for (const size of [1, 3, 7, out.length]) {
      const got: [number, string][] = [];
      const feed = createSectionReader(mark, (i, text) => got.push([i, text]));
      for (let at = 0; at < out.length; at += size) feed(out.slice(at, at + size));
      expect(got, `chunks of ${size}`).toEqual([[0, 'Name: web\n'], [1, ''], [2, '<domain/>\n']]);
    }
    // Mark 1 is not mark 10's beginning: marks are looked for in order, whole.
    const got: string[] = [];
    const feed = createSectionReader(mark, (_, text) => got.push(text));
    feed(`${mark(0)}a${mark(10)}b${mark(1)}`);
    expect(got).toEqual([`a${mark(10)}b`]);
  });
});
