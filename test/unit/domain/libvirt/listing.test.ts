// The libvirt driver's listing against a fake virsh: a guest whose calls hang
// or fail is still listed, by UUID, with what could be learnt and what is
// missing; the other guests are described in full.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLibvirtDriver, type LibvirtDriver } from '../../../../src/domain/libvirt/driver.js';
import { POLICY_NAMESPACE } from '../../../../src/domain/libvirt/domain-xml.js';
import type { Guest } from '../../../../src/domain/types.js';
import { createMemoryLog } from '../../../../src/util/log.js';
import { writeFakeVirsh, type FakeVirsh } from './fake-virsh.js';

const A = '084149e7-9171-411b-a0a7-4233aaefdf57';
const B = '1b6a0c2e-5f0d-4d8e-9c51-0c7a2b9f3e11';
const op = () => ({ signal: AbortSignal.timeout(20_000) });

// $4 is the subcommand (virsh -q -c URI SUB ...); files in $D steer each call:
// hang-SUB-UUID hangs it, fail-SUB-UUID fails it with the file's text.
function script(d: string): string {
  return `D='${d}'
sub="$4"; dom=
for a in "$@"; do case "$a" in --domain=*) dom="\${a#--domain=}" ;; esac; done
[ -e "$D/hang-$sub-$dom" ] && exec sleep 600
if [ -e "$D/fail-$sub-$dom" ]; then echo "error: $(cat "$D/fail-$sub-$dom")" >&2; exit 1; fi
case "$sub" in
  list) printf '%s\\n%s\\n' '${A}' '${B}' ;;
  dominfo) printf 'Name:           %s\\nUUID:           %s\\nState:          paused\\nMax memory:     131072 KiB\\nPersistent:     yes\\nAutostart:      disable\\nManaged save:   no\\n' "$(cat "$D/name-$dom")" "$dom" ;;
  domstate) echo 'running (booted)' ;;
  dumpxml) printf "<domain type='qemu'><name>%s</name><uuid>%s</uuid><memory unit='KiB'>262144</memory><metadata><p:policy xmlns:p='${POLICY_NAMESPACE}' order='3' timeout='90'/></metadata></domain>" "$(cat "$D/name-$dom")" "$dom" ;;
  *) echo "error: unexpected $sub" >&2; exit 1 ;;
esac`;
}

describe('libvirt driver: listing guests that cannot be described in time', () => {
  let fake: FakeVirsh;
  let dir: string;
  let driver: LibvirtDriver;
  const log = createMemoryLog();
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-list-'));
    writeFileSync(join(dir, `name-${A}`), 'web');
    writeFileSync(join(dir, `name-${B}`), 'db');
    fake = writeFakeVirsh(script(dir));
    driver = createLibvirtDriver({ uri: 'qemu:///system', virsh: fake.path, describeTimeoutMs: 500, safetyPollMs: 600_000, log });
  });
  afterEach(async () => {
    await driver.close();
    fake.remove();
    rmSync(dir, { recursive: true, force: true });
  });
  const hang = (sub: string, id: string): void => writeFileSync(join(dir, `hang-${sub}-${id}`), '');
  const fail = (sub: string, id: string, msg: string): void => writeFileSync(join(dir, `fail-${sub}-${id}`), msg);
  const byId = (guests: Guest[], id: string): Guest | undefined => guests.find((g) => g.id === id);

  it('dumpxml hangs for one guest: it is listed with dominfo and domstate facts, policy and blockers missing; the other in full', async () => {
    hang('dumpxml', B);
    const answers: string[] = [];
    const guests = await driver.listGuests({ ...op(), onAnswer: (w) => answers.push(w) });
    expect(byId(guests, A)).toMatchObject({ name: 'web', state: 'running', memoryKiB: 262144, policy: { order: 3, timeout: 90 }, saveBlockers: [] });
    expect(byId(guests, A)?.undescribed).toBeUndefined();
    expect(byId(guests, B)).toEqual({
      id: B,
      name: 'db',
      uri: 'qemu:///system',
      state: 'running',
      stateDetail: 'running (booted)',
      memoryKiB: 131072,
      persistent: true,
      autostart: false,
      hasSavedImage: false,
      policy: {},
      saveBlockers: [],
      undescribed: { missing: ['policy', 'saveBlockers'], problems: ['dumpxml: no answer within 500 ms', 'dumpxml --inactive: no answer within 500 ms'] },
    });
    // Every answer is reported (the hung check counts them); the hanging calls are not.
    expect(answers).toContain('list --all --uuid');
    expect(answers).toContain(`dominfo of ${B}`);
    expect(answers).toContain(`dumpxml of ${A}`);
    expect(answers).not.toContain(`dumpxml of ${B}`);
  });

  it('nothing about a guest answers: still listed, by UUID, state unknown (not saved), every fact missing', async () => {
    for (const sub of ['dominfo', 'domstate', 'dumpxml']) hang(sub, B);
    const guests = await driver.listGuests(op());
    expect(byId(guests, B)).toMatchObject({
      id: B,
      name: B,
      state: 'other',
      stateDetail: 'unknown (no answer about its state)',
      memoryKiB: 0,
      persistent: true,
      undescribed: { missing: ['identity', 'state', 'policy', 'saveBlockers', 'memory'] },
    });
    expect(byId(guests, B)?.undescribed?.problems).toHaveLength(4);
    expect(byId(guests, A)?.undescribed).toBeUndefined();
  });

  it('domstate fails: the state comes from dominfo; a guest gone between list and dominfo is left out', async () => {
    fail('domstate', B, 'internal error: something odd');
    let guests = await driver.listGuests(op());
    expect(byId(guests, B)).toMatchObject({ state: 'paused', stateDetail: 'paused (dominfo)', undescribed: { missing: [], problems: [expect.stringMatching(/^domstate: .*domstate --reason --domain=.*: internal error: something odd$/)] } });
    fail('dominfo', B, `failed to get domain '${B}'`);
    fail('domstate', B, `failed to get domain '${B}'`);
    guests = await driver.listGuests(op());
    expect(guests.map((g) => g.id)).toEqual([A]);
  });

  it('getGuest (one guest, outside a listing) still fails when its state cannot be had, but takes a hanging dumpxml as missing facts', async () => {
    hang('dumpxml', B);
    expect((await driver.getGuest(B, op())).undescribed?.missing).toEqual(['policy', 'saveBlockers']);
    hang('domstate', B);
    await expect(driver.getGuest(B, op())).rejects.toThrow(/domstate/);
  });
});
