// The bench's count of the virsh processes a listing spawns, from the VIRSH wrapper's log.
import { describe, expect, it } from 'vitest';
import { countVirshCalls, virshCommand } from '../../../bench/lib/virsh-counter.js';

describe('virshCommand', () => {
  it('skips the global options and their values', () => {
    expect(virshCommand('-q -c qemu:///system list --all --uuid')).toBe('list');
    expect(virshCommand('--connect qemu:///system -d 0 -r dumpxml --inactive --domain=x')).toBe('dumpxml');
    expect(virshCommand('--connect=qemu:///system domstats --state')).toBe('domstats');
  });

  it('names the first command of a batch, and a shell when there is no command', () => {
    expect(virshCommand('-q -c qemu:///system dominfo a; echo --; dominfo b')).toBe('dominfo');
    expect(virshCommand('-q -c qemu:///system')).toBe('(shell)');
  });
});

describe('countVirshCalls', () => {
  it('counts each logged call once, by command', () => {
    const log = ['-q -c qemu:///system list --all --uuid', '-q -c qemu:///system version', '-q -c qemu:///system dumpxml --domain=a', '-q -c qemu:///system dumpxml --domain=b', ''].join('\n');
    expect(countVirshCalls(log)).toEqual({ total: 4, byCommand: { list: 1, version: 1, dumpxml: 2 } });
  });

  it('is zero for an empty log', () => {
    expect(countVirshCalls('')).toEqual({ total: 0, byCommand: {} });
  });
});
