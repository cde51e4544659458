import { XMLParser } from 'fast-xml-parser';
import { describe, expect, it, vi } from 'vitest';
import { createDomainXmlReader, parseDomainXml, POLICY_NAMESPACE } from '../../../../src/domain/libvirt/domain-xml.js';
import { ProtocolError } from '../../../../src/domain/errors.js';

function domainXml(inner: string, memory = "<memory unit='KiB'>262144</memory>"): string {
  return `<domain type='qemu'><name>web server</name><uuid>084149E7-9171-411b-a0a7-4233aaefdf57</uuid>${memory}${inner}</domain>`;
}

describe('domain XML', () => {
  it('reads memory, name, uuid and a policy under any prefix', () => {
    const f = parseDomainXml(
      domainXml(`<metadata><other:x xmlns:other="urn:else"/><p:policy xmlns:p="${POLICY_NAMESPACE}" order="2" on_shutdown="shutdown" timeout="120" on_boot="ignore"/></metadata>`),
      'test',
    );
    expect(f).toEqual({
      name: 'web server',
      uuid: '084149e7-9171-411b-a0a7-4233aaefdf57',
      memoryKiB: 262144,
      policy: { order: 2, onShutdown: 'shutdown', timeout: 120, onBoot: 'ignore' },
      policyProblems: [],
      saveBlockers: [],
    });
    expect(parseDomainXml(domainXml(`<metadata><policy xmlns="${POLICY_NAMESPACE}" on_shutdown="destroy"/></metadata>`), 't').policy).toEqual({
      onShutdown: 'destroy',
    });
  });

  it('converts memory units', () => {
    expect(parseDomainXml(domainXml('', "<memory unit='GiB'>2</memory>"), 't').memoryKiB).toBe(2 * 1024 * 1024);
    expect(parseDomainXml(domainXml('', '<memory>1024</memory>'), 't').memoryKiB).toBe(1024);
  });

  it('reports bad policy values and keeps the good ones', () => {
    const f = parseDomainXml(
      domainXml(`<metadata><rcl:policy xmlns:rcl="${POLICY_NAMESPACE}" order="two" on_shutdown="suspend" timeout="-5" on_boot="restore" colour="red"/></metadata>`),
      "dumpxml of 'web server'",
    );
    expect(f.policy).toEqual({ onBoot: 'restore' });
    expect(f.policyProblems).toEqual([
      `dumpxml of 'web server', metadata ${POLICY_NAMESPACE}: unknown attribute colour ignored (known: order, on_shutdown, timeout, on_boot)`,
      `dumpxml of 'web server', metadata ${POLICY_NAMESPACE}: order="two" ignored (want a whole number)`,
      `dumpxml of 'web server', metadata ${POLICY_NAMESPACE}: timeout="-5" ignored (want seconds, a whole number above 0)`,
      `dumpxml of 'web server', metadata ${POLICY_NAMESPACE}: on_shutdown="suspend" ignored (want managedsave, shutdown or destroy)`,
    ]);
  });

  it('clamps a policy timeout above 7 days to 7 days, with a problem saying so', () => {
    const f = parseDomainXml(domainXml(`<metadata><rcl:policy xmlns:rcl="${POLICY_NAMESPACE}" timeout="99999999999"/></metadata>`), "dumpxml of 'web server'");
    expect(f.policy).toEqual({ timeout: 604800 });
    expect(f.policyProblems).toEqual([`dumpxml of 'web server', metadata ${POLICY_NAMESPACE}: timeout="99999999999" is above the maximum of 604800 s: 604800 s is used`]);
    expect(parseDomainXml(domainXml(`<metadata><rcl:policy xmlns:rcl="${POLICY_NAMESPACE}" timeout="604800"/></metadata>`), 't')).toMatchObject({ policy: { timeout: 604800 }, policyProblems: [] });
  });

  it('finds what blocks a save', () => {
    const f = parseDomainXml(
      domainXml(`<cpu mode='custom'><model>qemu64</model><feature policy='require' name='invtsc'/><feature policy='disable' name='svm'/></cpu>
      <devices><hostdev mode='subsystem' type='pci'/><filesystem type='mount'><driver type='virtiofs'/><target dir='share'/></filesystem>
      <filesystem type='mount'><target dir='nine'/></filesystem></devices>`),
      't',
    );
    expect(f.saveBlockers).toEqual([
      "host device passthrough (<hostdev type='pci'>): cannot be saved",
      "virtiofs shared folder 'share': cannot be saved",
      "9p shared folder 'nine': cannot be saved",
      'CPU feature invtsc (policy require): cannot be migrated or saved',
    ]);
  });

  it('names bad XML as a protocol error', () => {
    expect(() => parseDomainXml('<domain><name>x</domain>', 'dumpxml of x')).toThrow(ProtocolError);
    expect(() => parseDomainXml('<network/>', 'dumpxml of x')).toThrow(/dumpxml of x: no <domain> element/);
    expect(() => parseDomainXml(domainXml('', '<memory>lots</memory>'), 'x')).toThrow(/cannot read <memory>/);
  });

  it("a guest's reader parses the same text once (a shut-off guest's live and inactive XML) and reads the same facts as parseDomainXml", () => {
    const xml = domainXml(`<metadata><p:policy xmlns:p="${POLICY_NAMESPACE}" order="x"/></metadata><devices><hostdev type='pci'/></devices>`);
    const other = domainXml('', "<memory unit='MiB'>64</memory>");
    const read = createDomainXmlReader();
    const parse = vi.spyOn(XMLParser.prototype, 'parse');
    try {
      const live = read(xml, 'dumpxml of x');
      const inactive = read(xml, 'dumpxml --inactive of x');
      expect(parse).toHaveBeenCalledTimes(1);
      expect(read(other, 'dumpxml of y').memoryKiB).toBe(65536);
      expect(parse).toHaveBeenCalledTimes(2);
      parse.mockRestore();
      expect(live).toEqual(parseDomainXml(xml, 'dumpxml of x'));
      expect(inactive).toEqual(parseDomainXml(xml, 'dumpxml --inactive of x'));
      // Each names its own source in what it reports.
      expect(inactive.policyProblems).toEqual([expect.stringMatching(/^dumpxml --inactive of x, .*order="x" ignored/)]);
    } finally {
      parse.mockRestore();
    }
  });
});
