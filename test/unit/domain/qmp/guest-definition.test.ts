import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  GuestDefinitionError,
  listDefinitionFiles,
  loadDefinition,
  memoryFromArgv,
  parseDefinition,
  saveBlockersOf,
} from '../../../../src/domain/qmp/guest-definition.js';

const dir = mkdtempSync(join(tmpdir(), 'rcl-defs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = '/etc/qemu/guests/web.json';
const ok = { argv: ['qemu-system-x86_64', '-m', '512'], autostart: true, policy: { order: 3, on_shutdown: 'shutdown', timeout: 90, on_boot: 'ignore' } };
const fail = (json: unknown, f = file): GuestDefinitionError => {
  try {
    parseDefinition(f, json);
  } catch (err) {
    expect(err).toBeInstanceOf(GuestDefinitionError);
    return err as GuestDefinitionError;
  }
  throw new Error('parseDefinition accepted it');
};

describe('guest definitions', () => {
  it('reads a valid definition', () => {
    expect(parseDefinition(file, ok)).toEqual({
      name: 'web', file, argv: ok.argv, autostart: true, memoryKiB: 512 * 1024, saveBlockers: [],
      policy: { order: 3, onShutdown: 'shutdown', timeout: 90, onBoot: 'ignore' },
    });
  });

  it('clamps a policy timeout above 7 days to 7 days', () => {
    expect(parseDefinition(file, { argv: ['qemu'], policy: { timeout: 99_999_999 } }).policy).toEqual({ timeout: 604800 });
    expect(parseDefinition(file, { argv: ['qemu'], policy: { timeout: 604800 } }).policy).toEqual({ timeout: 604800 });
  });

  it('defaults: autostart false, empty policy, 128 MiB', () => {
    expect(parseDefinition(file, { argv: ['qemu-system-x86_64'] })).toMatchObject({ autostart: false, policy: {}, memoryKiB: 128 * 1024 });
  });

  it.each([
    [[], '(file)'],
    [{ argv: [] }, 'argv'],
    [{ argv: 'qemu' }, 'argv'],
    [{ argv: ['qemu', 3] }, 'argv[1]'],
    [{ argv: ['qemu', '-qmp', 'unix:/x'] }, 'argv[1]'],
    [{ argv: ['qemu', '-daemonize'] }, 'argv[1]'],
    [{ argv: ['qemu'], autostart: 'yes' }, 'autostart'],
    [{ argv: ['qemu'], policy: [] }, 'policy'],
    [{ argv: ['qemu'], policy: { order: 1.5 } }, 'policy.order'],
    [{ argv: ['qemu'], policy: { on_shutdown: 'hibernate' } }, 'policy.on_shutdown'],
    [{ argv: ['qemu'], policy: { timeout: -1 } }, 'policy.timeout'],
    [{ argv: ['qemu'], policy: { on_boot: 'start' } }, 'policy.on_boot'],
    [{ argv: ['qemu'], policy: { onShutdown: 'destroy' } }, 'policy.onShutdown'],
    [{ argv: ['qemu'], autostrat: true }, 'autostrat'],
    [{ argv: ['qemu', '-m', 'lots'] }, 'argv (-m)'],
  ])('refuses %j naming the field %s and the file', (json, field) => {
    const err = fail(json);
    expect(err.field).toBe(field);
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
    expect(err.message).toContain(field);
  });

  it('refuses file names that cannot be guest names', () => {
    expect(fail(ok, '/g/a\tb.json').field).toBe('(file name)');
    expect(fail(ok, '/g/.json').field).toBe('(file name)');
  });

  it('takes any other file name as the guest name: =, commas, spaces, quotes, $', () => {
    for (const name of ['web=1', 'a,b', 'a,,b=c', 'my guest', `it's "q"`, '$HOME', '-x', 'guest=db']) {
      expect(parseDefinition(`/g/${name}.json`, ok).name).toBe(name);
    }
  });

  it('loads files, naming unreadable and non-JSON ones', async () => {
    writeFileSync(join(dir, 'good.json'), JSON.stringify(ok));
    writeFileSync(join(dir, 'bad.json'), '{"argv": [');
    writeFileSync(join(dir, '.hidden.json'), '{}');
    writeFileSync(join(dir, 'notes.txt'), 'x');
    expect(await listDefinitionFiles(dir)).toEqual([join(dir, 'bad.json'), join(dir, 'good.json')]);
    expect((await loadDefinition(join(dir, 'good.json'))).name).toBe('good');
    await expect(loadDefinition(join(dir, 'bad.json'))).rejects.toThrow(/bad\.json: \(file\): not valid JSON/);
    await expect(loadDefinition(join(dir, 'gone.json'))).rejects.toThrow(/cannot read it \(ENOENT\)/);
    expect(await listDefinitionFiles(join(dir, 'absent'))).toEqual([]);
  });

  it('reads -m in its forms', () => {
    const never = (p: string): never => {
      throw new Error(p);
    };
    expect(memoryFromArgv(['q', '-m', '256'], never)).toBe(256 * 1024);
    expect(memoryFromArgv(['q', '-m', '2G'], never)).toBe(2 * 1024 * 1024);
    expect(memoryFromArgv(['q', '-m', 'size=1536M,slots=2,maxmem=4G'], never)).toBe(1536 * 1024);
    expect(memoryFromArgv(['q', '-m', '524288k'], never)).toBe(524288);
    expect(memoryFromArgv(['q'], never)).toBe(128 * 1024);
  });

  it('lists what would block a save', () => {
    expect(saveBlockersOf(['q', '-device', 'vfio-pci,host=01:00.0', '-virtfs', 'local,path=/x', '-device', 'virtio-net-pci'])).toEqual([
      'host device (vfio-pci)',
      '9p share (-virtfs)',
    ]);
    expect(saveBlockersOf(['q', '-device', 'virtio-9p-pci,fsdev=f', '-cpu', 'host,+invtsc'])).toEqual(['9p share (virtio-9p-pci)', 'invariant TSC (invtsc)']);
    expect(saveBlockersOf(['q', '-m', '256'])).toEqual([]);
  });
});

describe('save blockers of QEMUs that drop privileges', () => {
  it('names -runas, -run-with user= and -chroot', () => {
    expect(saveBlockersOf(['q', '-runas', 'nobody'])).toEqual(['drops privileges (-runas nobody): QEMU cannot reach the save socket in the root-only runtime directory']);
    expect(saveBlockersOf(['q', '-run-with', 'user=qemu'])[0]).toMatch(/^drops privileges \(-run-with user=qemu\)/);
    expect(saveBlockersOf(['q', '-chroot', '/var/empty'])[0]).toMatch(/^chroot \(-chroot \/var\/empty\)/);
    expect(saveBlockersOf(['q', '-run-with', 'async-teardown=on'])).toEqual([]);
  });
});

