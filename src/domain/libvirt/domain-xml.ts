// Reading a libvirt domain XML (`virsh dumpxml`): its memory, the per-guest
// policy in the metadata namespace urn:rc-libvirt:policy:1, and what would
// make a managedsave fail. Bad policy values are reported, never thrown.
import { XMLParser } from 'fast-xml-parser';
import { clampGuestTimeout } from '../../config/settings.js';
import { ProtocolError } from '../errors.js';
import type { GuestPolicy } from '../types.js';

/** The namespace of rc-libvirt's per-guest policy in domain metadata. */
export const POLICY_NAMESPACE = 'urn:rc-libvirt:policy:1';

/** What a domain XML tells us. */
export interface DomainXmlFacts {
  name: string;
  uuid: string;
  /** `<memory>` in KiB. */
  memoryKiB: number;
  policy: GuestPolicy;
  /** Policy values that were ignored, each naming the attribute and why. */
  policyProblems: string[];
  /** Devices and features that make a save fail. */
  saveBlockers: string[];
}

type Node = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: true,
  isArray: (name) => ['hostdev', 'filesystem', 'feature'].includes(name),
});

/** Parse a domain XML; `where` names its source in errors (e.g. `dumpxml of 'web server'`). */
export function parseDomainXml(xml: string, where: string): DomainXmlFacts {
  return domainFacts(parseXmlDocument(xml, where), where);
}

function domainFacts(doc: Node, where: string): DomainXmlFacts {
  const dom = asNode(doc.domain);
  if (!dom) throw new ProtocolError(`${where}: no <domain> element`);
  return readDomainFacts(dom, where);
}

/**
 * The parts of a domain XML the facts come from, as one XPath union for
 * `virsh dumpxml --xpath EXPR --wrap` (no spaces: it needs no quoting in a
 * virsh command string). Each selected element keeps its subtree and the
 * namespace declarations it uses (the policy's are on its own element), and
 * no two paths select elements of the same name, so the `<nodes>` answer
 * gives the elements back to their places (selectedDomain).
 */
export const DOMAIN_FACTS_XPATH = [
  '/domain/name',
  '/domain/uuid',
  '/domain/memory',
  '/domain/metadata',
  '/domain/devices/hostdev',
  '/domain/devices/filesystem',
  '/domain/cpu/feature',
].join('|');

/** Parse the `<nodes>` answer of `dumpxml --xpath DOMAIN_FACTS_XPATH --wrap`: the same facts as parseDomainXml of the whole document. */
export function parseSelectedDomainXml(xml: string, where: string): DomainXmlFacts {
  return readDomainFacts(selectedDomain(parseXmlDocument(xml, where), where), where);
}

// The <domain> element readDomainFacts reads, rebuilt from the selected
// elements. name and uuid are in every domain: an answer without them (an
// empty `<nodes/>`, nothing matched) is not a description of this domain.
function selectedDomain(doc: Node, where: string): Node {
  const nodes = asNode(doc.nodes);
  if (!nodes || nodes.name === undefined || nodes.uuid === undefined) {
    throw new ProtocolError(`${where}: the selected parts of the domain XML have no <name> and <uuid>`);
  }
  const dom: Node = { name: nodes.name, uuid: nodes.uuid };
  if (nodes.memory !== undefined) dom.memory = nodes.memory;
  if (nodes.metadata !== undefined) dom.metadata = nodes.metadata;
  const devices: Node = {};
  if (nodes.hostdev !== undefined) devices.hostdev = nodes.hostdev;
  if (nodes.filesystem !== undefined) devices.filesystem = nodes.filesystem;
  dom.devices = devices;
  if (nodes.feature !== undefined) dom.cpu = { feature: nodes.feature };
  return dom;
}

/**
 * parseDomainXml (or, for `selected`, parseSelectedDomainXml) for the
 * documents of one guest, parsing a text it has just parsed only once: a
 * shut-off guest's live XML and its inactive XML are the same document, and
 * parsing is most of a listing's CPU time. The facts are read anew for each
 * `where`, so they are the same as parseDomainXml's.
 */
export function createDomainXmlReader(kind: 'domain' | 'selected' = 'domain'): (xml: string, where: string) => DomainXmlFacts {
  let last: { xml: string; doc: Node } | undefined;
  return (xml, where) => {
    const doc = last?.xml === xml ? last.doc : parseXmlDocument(xml, where);
    last = { xml, doc };
    return kind === 'selected' ? readDomainFacts(selectedDomain(doc, where), where) : domainFacts(doc, where);
  };
}

/** Parse any XML document with the parser the domain XML uses (attributes as `@name`). */
export function parseXmlDocument(xml: string, where: string): Record<string, unknown> {
  try {
    return parser.parse(xml, true) as Node;
  } catch (err) {
    throw new ProtocolError(`${where}: not XML: ${(err as Error).message}`, { cause: err });
  }
}

/** The facts of a parsed `<domain>` element (also the one inside libvirt's status XML). */
export function readDomainFacts(dom: Record<string, unknown>, where: string): DomainXmlFacts {
  const memory = asNode(dom.memory) ?? { '#text': dom.memory };
  const memoryKiB = toKiB(String(memory['#text'] ?? ''), String(memory['@unit'] ?? 'KiB'));
  if (memoryKiB === undefined) throw new ProtocolError(`${where}: cannot read <memory> ${JSON.stringify(dom.memory)}`);
  const { policy, problems } = readPolicy(asNode(dom.metadata), where);
  return {
    name: text(dom.name),
    uuid: text(dom.uuid).toLowerCase(),
    memoryKiB,
    policy,
    policyProblems: problems,
    saveBlockers: findSaveBlockers(dom),
  };
}

/** What in this domain makes a managedsave fail (host devices, shared folders, invtsc). */
function findSaveBlockers(dom: Node): string[] {
  const blockers: string[] = [];
  const devices = asNode(dom.devices) ?? {};
  for (const h of asArray(devices.hostdev)) {
    const type = String(h['@type'] ?? 'device');
    blockers.push(`host device passthrough (<hostdev type='${type}'>): cannot be saved`);
  }
  for (const fs of asArray(devices.filesystem)) {
    const driver = String(asNode(fs.driver)?.['@type'] ?? 'path');
    const target = String(asNode(fs.target)?.['@dir'] ?? '?');
    const kind = driver === 'virtiofs' ? 'virtiofs' : '9p';
    blockers.push(`${kind} shared folder '${target}': cannot be saved`);
  }
  for (const f of asArray(asNode(dom.cpu)?.feature)) {
    const policy = String(f['@policy'] ?? 'require');
    if (f['@name'] === 'invtsc' && (policy === 'require' || policy === 'force')) {
      blockers.push(`CPU feature invtsc (policy ${policy}): cannot be migrated or saved`);
    }
  }
  return blockers;
}

/** The policy element of our namespace among the metadata's children, whatever its prefix. */
function readPolicy(metadata: Node | undefined, where: string): { policy: GuestPolicy; problems: string[] } {
  const policy: GuestPolicy = {};
  const problems: string[] = [];
  if (!metadata) return { policy, problems };
  for (const [key, value] of Object.entries(metadata)) {
    const el = asNode(value) ?? (Array.isArray(value) ? asNode(value[0]) : undefined);
    if (!el) continue;
    const colon = key.indexOf(':');
    const prefix = colon < 0 ? undefined : key.slice(0, colon);
    const local = colon < 0 ? key : key.slice(colon + 1);
    const ns = prefix === undefined ? el['@xmlns'] : el[`@xmlns:${prefix}`];
    if (ns !== POLICY_NAMESPACE) continue;
    const at = `${where}, metadata ${POLICY_NAMESPACE}`;
    if (local !== 'policy') {
      problems.push(`${at}: element <${local}> ignored (want <policy>)`);
      continue;
    }
    readPolicyAttributes(el, at, policy, problems);
  }
  return { policy, problems };
}

const KNOWN = ['order', 'on_shutdown', 'timeout', 'on_boot'];

function readPolicyAttributes(el: Node, at: string, policy: GuestPolicy, problems: string[]): void {
  for (const attr of Object.keys(el)) {
    if (!attr.startsWith('@') || attr.startsWith('@xmlns')) continue;
    if (!KNOWN.includes(attr.slice(1))) problems.push(`${at}: unknown attribute ${attr.slice(1)} ignored (known: ${KNOWN.join(', ')})`);
  }
  const get = (name: string): string | undefined => {
    const v = el[`@${name}`];
    return v === undefined ? undefined : String(v).trim();
  };
  const order = get('order');
  if (order !== undefined) {
    if (/^-?\d{1,6}$/.test(order)) policy.order = Number(order);
    else problems.push(`${at}: order="${order}" ignored (want a whole number)`);
  }
  const timeout = get('timeout');
  if (timeout !== undefined) {
    if (/^\d+$/.test(timeout) && Number(timeout) > 0) {
      const { seconds, clamped } = clampGuestTimeout(Number(timeout));
      policy.timeout = seconds;
      if (clamped) problems.push(`${at}: timeout="${timeout}" is above the maximum of ${seconds} s: ${seconds} s is used`);
    } else problems.push(`${at}: timeout="${timeout}" ignored (want seconds, a whole number above 0)`);
  }
  const onShutdown = get('on_shutdown');
  if (onShutdown !== undefined) {
    if (onShutdown === 'managedsave' || onShutdown === 'shutdown' || onShutdown === 'destroy') policy.onShutdown = onShutdown;
    else problems.push(`${at}: on_shutdown="${onShutdown}" ignored (want managedsave, shutdown or destroy)`);
  }
  const onBoot = get('on_boot');
  if (onBoot !== undefined) {
    if (onBoot === 'restore' || onBoot === 'ignore') policy.onBoot = onBoot;
    else problems.push(`${at}: on_boot="${onBoot}" ignored (want restore or ignore)`);
  }
}

// libvirt's memory units (docs: formatdomain.html#memory-allocation).
const KIB_PER: Record<string, number> = {
  b: 1 / 1024, bytes: 1 / 1024, k: 1, kib: 1, kb: 1000 / 1024, m: 1024, mib: 1024, mb: 1e6 / 1024,
  g: 1024 ** 2, gib: 1024 ** 2, gb: 1e9 / 1024, t: 1024 ** 3, tib: 1024 ** 3, tb: 1e12 / 1024,
};

function toKiB(value: string, unit: string): number | undefined {
  const factor = KIB_PER[unit.toLowerCase()];
  if (!/^\d+$/.test(value.trim()) || factor === undefined) return undefined;
  return Math.round(Number(value) * factor);
}

function asNode(v: unknown): Node | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Node) : undefined;
}

function asArray(v: unknown): Node[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map((x) => asNode(x) ?? {});
}

function text(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  const n = asNode(v);
  return n && n['#text'] !== undefined ? String(n['#text']) : '';
}
