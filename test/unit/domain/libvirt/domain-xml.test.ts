import { execFileSync } from 'node:child_process';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createDomainXmlReader, DOMAIN_FACTS_XPATH, parseDomainXml, parseSelectedDomainXml, POLICY_NAMESPACE,
} from '../../../../src/domain/libvirt/domain-xml.js';
import { ProtocolError } from '../../../../src/domain/errors.js';
import { writeFakeVirsh, type FakeVirsh } from './fake-virsh.js';

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

  describe('only the parts the facts come from (dumpxml --xpath DOMAIN_FACTS_XPATH --wrap)', () => {
    // The fake virsh selects from the XML in $XML as virsh's --xpath does.
    let fake: FakeVirsh;
    beforeAll(() => {
      fake = writeFakeVirsh(`case "$4" in dumpxml) printf '%s' "$XML" ;; *) exit 1 ;; esac`);
    });
    afterAll(() => fake.remove());
    const select = (xml: string): string =>
      execFileSync(fake.path, ['-q', '-c', 'test:///default', 'dumpxml', '--xpath', DOMAIN_FACTS_XPATH, '--wrap', '--domain=x'], {
        encoding: 'utf8', env: { ...process.env, XML: xml },
      });
    const uuid = "<uuid>3bf44ddb-b93a-4756-a290-aa48b837fe00</uuid>";
    const full = (inner: string, memory = "<memory unit='KiB'>262144</memory>"): string =>
      `<domain type='kvm' id='4'>\n  <name>vm-1</name>\n  ${uuid}\n  ${inner}\n  ${memory}\n  <currentMemory unit='KiB'>262144</currentMemory>\n` +
      "  <vcpu placement='static'>2</vcpu>\n  <os><type arch='x86_64' machine='pc-q35-8.2'>hvm</type><boot dev='hd'/></os>\n" +
      "  <features><acpi/><apic/></features>\n" +
      "  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>" +
      "<source file='/var/lib/libvirt/images/vm-1.qcow2'/><target dev='vda' bus='virtio'/></disk>" +
      "<interface type='network'><source network='default'/><model type='virtio'/></interface>DEVICES</devices>\n</domain>\n";
    const withDevices = (xml: string, devices: string): string => xml.replace('DEVICES', devices);
    const cases: Record<string, string> = {
      'no metadata, memory in KiB': withDevices(full(''), ''),
      'memory in MiB, policy with a prefix': withDevices(
        full(`<metadata>\n    <rcl:policy xmlns:rcl="${POLICY_NAMESPACE}" order="2" on_shutdown="shutdown" timeout="90" on_boot="ignore"/>\n  </metadata>`, "<memory unit='MiB'>512</memory>"),
        '',
      ),
      'memory in GiB, default-namespace policy among other metadata, with bad values': withDevices(
        full(`<metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://slackware.com/15"/></libosinfo:libosinfo>` +
          `<policy xmlns="${POLICY_NAMESPACE}" order="x" colour="red" timeout="99999999999"/></metadata>`, "<memory unit='GiB'>2</memory>"),
        '',
      ),
      'hostdev, 9p and virtiofs shared folders': withDevices(
        full(''),
        "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>" +
          "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0x5678'/></source></hostdev>" +
          "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/><source dir='/srv/share'/><target dir='share'/></filesystem>" +
          "<filesystem type='mount' accessmode='mapped'><source dir='/srv/nine'/><target dir='nine'/></filesystem>",
      ),
      'invtsc required and an optional feature; a policy element of another name': withDevices(
        full(`<metadata><p:rules xmlns:p="${POLICY_NAMESPACE}"/></metadata>\n  <cpu mode='host-passthrough' check='none'><feature policy='require' name='invtsc'/><feature policy='optional' name='vmx'/></cpu>`),
        '',
      ),
    };
    for (const [what, xml] of Object.entries(cases)) {
      it(`reads the same facts as the whole document: ${what}`, () => {
        const selected = select(xml);
        expect(selected.length).toBeLessThan(xml.length);
        expect(parseSelectedDomainXml(selected, 'dumpxml of x')).toEqual(parseDomainXml(xml, 'dumpxml of x'));
        const read = createDomainXmlReader('selected');
        expect(read(selected, 'dumpxml --inactive of x')).toEqual(parseDomainXml(xml, 'dumpxml --inactive of x'));
      });
    }

    it('reads what virsh 9 printed for a domain with a policy, invtsc and a virtiofs folder as from its whole XML', () => {
      // `virsh -c test:///FILE dumpxml --xpath DOMAIN_FACTS_XPATH --wrap --domain=m1` (virsh 9.0.0) and the same domain's dumpxml.
      // Both begin alike (virsh indents the selected elements as in the whole document).
      const head = `
  <name>m1</name>
  <uuid>3bf44ddb-b93a-4756-a290-aa48b837fe00</uuid>
  <metadata>
    <rcl:policy xmlns:rcl="${POLICY_NAMESPACE}" order="3" on_shutdown="shutdown"/>
    <other xmlns="urn:x">
      <a/>
    </other>
  </metadata>
`;
      const printed = `<nodes>${head}  <memory unit="KiB">65536</memory>
  <feature policy="require" name="invtsc"/>
  <feature policy="optional" name="vmx"/>
  <filesystem type="mount" accessmode="passthrough">
    <driver type="virtiofs"/>
    <source dir="/a"/>
    <target dir="tag1"/>
  </filesystem>
</nodes>
`;
      const whole = `<domain type='test' id='1'>${head}  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='i686'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>qemu64</model>
    <feature policy='require' name='invtsc'/>
    <feature policy='optional' name='vmx'/>
  </cpu>
  <clock offset='utc'/>
  <devices>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <source dir='/a'/>
      <target dir='tag1'/>
    </filesystem>
  </devices>
</domain>
`;
      const facts = parseSelectedDomainXml(printed, 't');
      expect(facts).toEqual(parseDomainXml(whole, 't'));
      expect(facts.policy).toEqual({ order: 3, onShutdown: 'shutdown' });
      expect(facts.saveBlockers).toHaveLength(2);
      expect(parseSelectedDomainXml(select(whole), 't')).toEqual(facts);
    });

    it('an answer without name and uuid (nothing matched: <nodes/>) is no description', () => {
      expect(() => parseSelectedDomainXml('<nodes/>\n', 'dumpxml of x')).toThrow(ProtocolError);
      expect(() => parseSelectedDomainXml(select('<network><name>n</name></network>'), 'dumpxml of x')).toThrow(/dumpxml of x: .*no <name> and <uuid>/);
      expect(() => parseSelectedDomainXml("<nodes><name>x</name><memory unit='KiB'>1</memory></nodes>", 'x')).toThrow(ProtocolError);
      expect(() => createDomainXmlReader('selected')('', 'x')).toThrow(ProtocolError);
    });
  });
});
