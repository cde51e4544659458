import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseStatusFile, readStatusFiles } from '../../../../src/domain/libvirt/status-files.js';

const UUID = '084149e7-9171-411b-a0a7-4233aaefdf57';

function statusXml(name: string, extra = "pid='7790'"): string {
  return `<!--
WARNING: THIS IS AN AUTO-GENERATED FILE.
-->
<domstatus state='running' reason='booted' ${extra}>
  <taint flag='high-privileges'/>
  <monitor path='/var/lib/libvirt/qemu/domain-1-${name}/monitor.sock' type='unix'/>
  <domain type='qemu' id='1'>
    <name>${name}</name>
    <uuid>${UUID}</uuid>
    <metadata><rcl:policy xmlns:rcl="urn:rc-libvirt:policy:1" timeout="30"/></metadata>
    <memory unit='KiB'>131072</memory>
  </domain>
</domstatus>
`;
}

let dir: string | undefined;
afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

describe('libvirt status files', () => {
  it('reads name, uuid, state, pid, monitor and the domain', () => {
    expect(parseStatusFile(statusXml('web server'), 'f.xml')).toMatchObject({
      name: 'web server',
      uuid: UUID,
      state: 'running',
      pid: 7790,
      monitorPath: '/var/lib/libvirt/qemu/domain-1-web server/monitor.sock',
      statusFile: 'f.xml',
      facts: { memoryKiB: 131072, policy: { timeout: 30 } },
    });
  });

  it('reports a damaged file, names it, and reads the others', async () => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-status-'));
    writeFileSync(join(dir, '-dash.xml'), statusXml('-dash'));
    writeFileSync(join(dir, 'broken.xml'), statusXml('broken').slice(0, 200));
    writeFileSync(join(dir, 'nopid.xml'), statusXml('nopid', "pid='x'"));
    writeFileSync(join(dir, 'driver.pid'), '123');
    const { guests, problems } = await readStatusFiles(dir);
    expect(guests.map((g) => g.name)).toEqual(['-dash']);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/broken\.xml: skipped: .*not XML/);
    expect(problems[1]).toMatch(/nopid\.xml: skipped: .*pid="x"> is not a process id/);
  });

  it('finds no guests where there is no status folder', async () => {
    expect(await readStatusFiles('/nonexistent/rcl')).toEqual({ guests: [], problems: [] });
  });
});
