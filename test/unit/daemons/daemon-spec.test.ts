import { describe, expect, it } from 'vitest';
import { splitOptions } from '../../../src/config/options-string.js';
import { DEFAULTS } from '../../../src/config/settings.js';
import { describeDaemon, describeDaemons } from '../../../src/daemons/daemon-spec.js';
import { kvmModules, parseProcModules } from '../../../src/daemons/modules.js';
import { parseQemuConfOwner, resolveId } from '../../../src/daemons/runtime-dirs.js';

describe('daemon descriptions', () => {
  it('take the pidfile from -p and start with -d (libvirtd also -l)', () => {
    const [lockd, logd, libvirtd] = describeDaemons(DEFAULTS);
    expect(lockd?.name).toBe('virtlockd');
    expect(lockd?.pidfile).toBe('/var/run/libvirt/virtlockd.pid');
    expect(logd?.startArgv).toEqual(['/usr/sbin/virtlogd', '-d', '-f', '/etc/libvirt/virtlogd.conf', '-p', '/var/run/libvirt/virtlogd.pid']);
    expect(libvirtd?.startArgv.slice(0, 3)).toEqual(['/usr/sbin/libvirtd', '-d', '-l']);
  });

  it('default the pidfile and read --pid-file=', () => {
    expect(describeDaemon({ ...DEFAULTS, virtlogdOpts: '' }, 'virtlogd').pidfile).toBe('/var/run/libvirt/virtlogd.pid');
    expect(describeDaemon({ ...DEFAULTS, virtlogdOpts: '--pid-file=/x/y.pid' }, 'virtlogd').pidfile).toBe('/x/y.pid');
  });

  it('split options honouring quotes', () => {
    expect(splitOptions(` -f '/etc/my dir/x.conf' -p "/run/a b.pid"  `)).toEqual(['-f', '/etc/my dir/x.conf', '-p', '/run/a b.pid']);
    expect(() => splitOptions('-f "x')).toThrow(/unclosed/);
  });
});

describe('modules', () => {
  it('pick the KVM modules from the CPU flags', () => {
    expect(kvmModules('processor : 0\nflags\t\t: fpu vme vmx sse\n')).toEqual(['kvm', 'kvm_intel']);
    expect(kvmModules('flags : fpu svm\n')).toEqual(['kvm', 'kvm_amd']);
    expect(kvmModules('flags : fpu sse\n')).toEqual([]);
  });

  it('read use counts from /proc/modules', () => {
    const m = parseProcModules('kvm_intel 380928 0 - Live 0x0\nkvm 1142784 1 kvm_intel, Live 0x0\n');
    expect(m.get('kvm_intel')).toBe(0);
    expect(m.get('kvm')).toBe(1);
  });
});

describe('owners', () => {
  it('resolve names and numbers', () => {
    expect(resolveId('users', 'root:x:0:\nusers:x:100:\n')).toBe(100);
    expect(resolveId('42', '')).toBe(42);
    expect(resolveId('nobody-here', 'root:x:0:\n')).toBeUndefined();
  });

  it('read user and group from qemu.conf', () => {
    expect(parseQemuConfOwner('#user = "x"\nuser = "root"\n group = "kvm" # comment\n')).toEqual({ user: 'root', group: 'kvm' });
  });
});
