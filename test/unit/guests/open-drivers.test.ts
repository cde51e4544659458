import { describe, expect, it } from 'vitest';
import { DEFAULTS, type Settings } from '../../../src/config/settings.js';
import { closeDrivers, libvirtUris, openDrivers } from '../../../src/guests/open-drivers.js';

const settings = (s: Partial<Settings>): Settings => ({ ...DEFAULTS, uris: [...DEFAULTS.uris], modules: [], runDir: '/nonexistent/run', guestsDir: '/nonexistent/guests', ...s });
const opened = async (s: Settings): Promise<string[]> => {
  const drivers = await openDrivers(s, new AbortController().signal);
  await closeDrivers(drivers);
  return drivers.map((d) => `${d.kind} ${d.kind === 'libvirt' ? d.uri : ''}`.trim());
};

describe('openDrivers', () => {
  it('the driver DRIVER names: libvirt at each URI, or qmp alone', async () => {
    expect(await opened(settings({ uris: ['lxc:///system', 'qemu:///system'] }))).toEqual(['libvirt lxc:///system', 'libvirt qemu:///system']);
    expect(await opened(settings({ driver: 'qmp' }))).toEqual(['qmp']);
  });

  it('everyDriver (a bad DRIVER or URIS at a shutdown command): libvirt at URIS and at its default URI, and the qmp driver', async () => {
    expect(await opened(settings({ everyDriver: true }))).toEqual(['libvirt qemu:///system', 'qmp']);
    expect(await opened(settings({ everyDriver: true, uris: ['lxc:///system'] }))).toEqual(['libvirt lxc:///system', 'libvirt qemu:///system', 'qmp']);
    expect(await opened(settings({ everyDriver: true, driver: 'qmp' }))).toEqual(['libvirt qemu:///system', 'qmp']);
    expect(libvirtUris(settings({ everyDriver: false, uris: ['lxc:///system'] }))).toEqual(['lxc:///system']);
  });
});
