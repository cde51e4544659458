// The hints of a libvirt listing: the UUIDs of libvirt's status files and
// definitions, read without following a symlink or blocking on a FIFO.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_DIR, hintDirsFor, readGuestHints } from '../../../../src/domain/libvirt/guest-hints.js';
import { DEFAULT_STATUS_DIR } from '../../../../src/domain/libvirt/status-files.js';

const A = '084149e7-9171-411b-a0a7-4233aaefdf57';
const B = '1b6a0c2e-5f0d-4d8e-9c51-0c7a2b9f3e11';
const C = '00000000-0000-4000-8000-00000000000c';

describe('readGuestHints', () => {
  let dir: string;
  let status: string;
  let config: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-hints-'));
    status = join(dir, 'run');
    config = join(dir, 'etc');
    mkdirSync(status);
    mkdirSync(config);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("takes the domain's UUID of a status file and of a definition, each once, lower case", () => {
    // A status file: <domstatus> with other elements before the <domain> inside it.
    writeFileSync(join(status, 'web.xml'), `<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-1-web/monitor.sock' type='unix'/>
  <qemuCaps><flag name='kvm'/></qemuCaps>
  <domain type='kvm' id='1'>
    <name>web</name>
    <uuid>${A.toUpperCase()}</uuid>
  </domain>
</domstatus>
`);
    writeFileSync(join(config, 'web.xml'), `<!-- WARNING: edit with virsh edit -->\n<domain type='kvm'>\n  <name>web</name>\n  <uuid>${A}</uuid>\n</domain>\n`);
    writeFileSync(join(config, 'db.xml'), `<domain type='kvm'><name>db</name><uuid> ${B} </uuid></domain>`);
    expect(readGuestHints([status, config]).sort()).toEqual([B, A].sort());
  });

  it("does not read a guest's definition after its status file gave the UUID; reads it when the status file gave none", () => {
    writeFileSync(join(status, 'web.xml'), `<domstatus><domain type='kvm'><name>web</name><uuid>${A}</uuid></domain></domstatus>`);
    // Not read: a definition that would give another UUID shows it.
    writeFileSync(join(config, 'web.xml'), `<domain><name>web</name><uuid>${C}</uuid></domain>`);
    writeFileSync(join(status, 'db.xml'), '<domstatus>cut short');
    writeFileSync(join(config, 'db.xml'), `<domain><name>db</name><uuid>${B}</uuid></domain>`);
    expect(readGuestHints([status, config]).sort()).toEqual([A, B].sort());
  });

  it('skips what is not a hint: other files, a UUID outside a domain, a bad UUID, a symlink, a FIFO, a folder; a missing folder', () => {
    writeFileSync(join(config, 'good.xml'), `<domain><uuid>${A}</uuid></domain>`);
    writeFileSync(join(config, 'notes.txt'), `<domain><uuid>${B}</uuid></domain>`);
    writeFileSync(join(config, 'net.xml'), `<network><uuid>${B}</uuid></network>`);
    writeFileSync(join(config, 'bad.xml'), '<domain><uuid>not-a-uuid-at-all-but-36-chars-long-x</uuid></domain>');
    const elsewhere = join(dir, 'elsewhere.xml');
    writeFileSync(elsewhere, `<domain><uuid>${C}</uuid></domain>`);
    symlinkSync(elsewhere, join(config, 'link.xml'));
    execFileSync('mkfifo', [join(config, 'fifo.xml')]);
    mkdirSync(join(config, 'autostart.xml'));
    expect(readGuestHints([join(dir, 'nowhere'), config])).toEqual([A]);
  });

  it('qemu:///system hints from its status and definitions folders; any other URI has none', () => {
    expect(hintDirsFor('qemu:///system')).toEqual([DEFAULT_STATUS_DIR, DEFAULT_CONFIG_DIR]);
    expect(hintDirsFor('qemu:///session')).toEqual([]);
    expect(hintDirsFor('qemu+ssh://host/system')).toEqual([]);
  });
});
