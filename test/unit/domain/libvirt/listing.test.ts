// The libvirt driver's listing against a fake virsh (fake-virsh.ts: one
// process runs several commands as virsh does): every guest described by one
// batch virsh; a guest whose calls hang or fail is asked on its own, and is
// still listed, by UUID, with what could be learnt and what is missing; the
// other guests are described in full.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BATCH_GUESTS, createLibvirtDriver, type LibvirtDriver } from '../../../../src/domain/libvirt/driver.js';
import { DOMAIN_FACTS_XPATH, POLICY_NAMESPACE } from '../../../../src/domain/libvirt/domain-xml.js';
import type { Guest } from '../../../../src/domain/types.js';
import { createMemoryLog } from '../../../../src/util/log.js';
import { writeFakeVirsh, type FakeVirsh } from './fake-virsh.js';

const A = '084149e7-9171-411b-a0a7-4233aaefdf57';
const B = '1b6a0c2e-5f0d-4d8e-9c51-0c7a2b9f3e11';
const op = () => ({ signal: AbortSignal.timeout(20_000) });

// $4 is the subcommand (virsh -q -c URI SUB ...); files in $D steer each call:
// hang-SUB-UUID hangs it, fail-SUB-UUID fails it with the file's text (once-SUB-UUID: only the next such call);
// transient-UUID, autostart-UUID and saved-UUID change what dominfo and the filtered lists say of the guest.
// `list` prints $D/list when there is one (a filtered list: see below); dumpxml prints $D/xml-UUID when there is one.
function script(d: string): string {
  return `D='${d}'
sub="$4"; dom=
for a in "$@"; do case "$a" in --domain=*) dom="\${a#--domain=}" ;; esac; done
[ -e "$D/hang-$sub-$dom" ] && exec sleep 600
if [ -e "$D/fail-$sub-$dom" ]; then echo "error: $(cat "$D/fail-$sub-$dom")" >&2; exit 1; fi
if [ -e "$D/once-$sub-$dom" ]; then echo "error: $(cat "$D/once-$sub-$dom")" >&2; rm "$D/once-$sub-$dom"; exit 1; fi
case "$sub" in
  list)
    # A filter prints $D/listFILTER when there is one, else the guests it selects by the files that steer dominfo.
    f=; for a in "$@"; do case "$a" in --persistent|--transient|--autostart|--no-autostart|--with-managed-save|--without-managed-save) f=$a ;; esac; done
    if [ -n "$f" ] && [ -e "$D/list$f" ]; then cat "$D/list$f"; exit 0; fi
    if [ -e "$D/list" ]; then all=$(cat "$D/list"); else all='${A} ${B}'; fi
    for id in $all; do
      case "$f" in
        --persistent) [ -e "$D/transient-$id" ] && continue ;;
        --transient) [ -e "$D/transient-$id" ] || continue ;;
        --autostart) [ -e "$D/autostart-$id" ] || continue ;;
        --no-autostart) [ -e "$D/autostart-$id" ] && continue ;;
        --with-managed-save) [ -e "$D/saved-$id" ] || continue ;;
        --without-managed-save) [ -e "$D/saved-$id" ] && continue ;;
      esac
      echo "$id"
    done ;;
  dominfo)
    p=yes; [ -e "$D/transient-$dom" ] && p=no; a=disable; [ -e "$D/autostart-$dom" ] && a=enable; m=no; [ -e "$D/saved-$dom" ] && m=yes
    printf 'Name:           %s\\nUUID:           %s\\nState:          paused\\nMax memory:     131072 KiB\\nPersistent:     %s\\nAutostart:      %s\\nManaged save:   %s\\n' "$(cat "$D/name-$dom")" "$dom" "$p" "$a" "$m" ;;
  domstate) echo 'running (booted)' ;;
  dumpxml) [ -e "$D/xml-$dom" ] && { cat "$D/xml-$dom"; exit 0; }; printf "<domain type='qemu'><name>%s</name><uuid>%s</uuid><memory unit='KiB'>262144</memory><metadata><p:policy xmlns:p='${POLICY_NAMESPACE}' order='3' timeout='90'/></metadata></domain>" "$(cat "$D/name-$dom")" "$dom" ;;
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
    // Only a batch is refused when $D/refuse-batch exists (the fall back to asking guest by guest).
    fake = writeFakeVirsh(script(dir), { connect: `case "$4" in *';'*) [ -e '${dir}/refuse-batch' ] && { echo 'error: failed to connect to the hypervisor' >&2; exit 1; } ;; esac` });
    driver = withBatchDeadline(10_000);
  });
  afterEach(async () => {
    await driver.close();
    fake.remove();
    rmSync(dir, { recursive: true, force: true });
  });
  // The batch's deadline is far off unless a call hangs (the fake takes a fork per command: slow on a busy machine).
  const withBatchDeadline = (batchTimeoutMs: number, describeTimeoutMs = 1500, hintDirs?: string[]): LibvirtDriver =>
    createLibvirtDriver({ uri: 'qemu:///system', virsh: fake.path, describeTimeoutMs, batchTimeoutMs, safetyPollMs: 600_000, log, ...(hintDirs ? { hintDirs } : {}) });
  const hangs = async (): Promise<void> => {
    await driver.close();
    driver = withBatchDeadline(1000);
  };
  const hang = (sub: string, id: string): void => writeFileSync(join(dir, `hang-${sub}-${id}`), '');
  const fail = (sub: string, id: string, msg: string): void => writeFileSync(join(dir, `fail-${sub}-${id}`), msg);
  const once = (sub: string, id: string, msg: string): void => writeFileSync(join(dir, `once-${sub}-${id}`), msg);
  const byId = (guests: Guest[], id: string): Guest | undefined => guests.find((g) => g.id === id);
  // The fake's processes: one line each; a batch has its commands in one argument, separated by `;`.
  const calls = (): string[] => readFileSync(fake.callsFile, 'utf8').split('\n').filter(Boolean);
  const batches = (): string[] => calls().filter((l) => l.includes(';'));
  // The batches that describe guests, and the one (the first) that lists the connection.
  const guestBatches = (): string[] => batches().filter((l) => l.includes('--domain='));
  const listBatches = (): string[] => batches().filter((l) => l.includes('; list --all --uuid;'));
  const askedAlone = (id: string): string[] => calls().filter((l) => !l.includes(';') && l.includes(`|--domain=${id}|`)).map((l) => l.split('|')[3]!);
  // `n` more guests (names g0, g1...), listed after A and B.
  const more = (n: number): string[] => {
    const ids = Array.from({ length: n }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    ids.forEach((id, i) => writeFileSync(join(dir, `name-${id}`), `g${i}`));
    writeFileSync(join(dir, 'list'), [A, B, ...ids].map((id) => `${id}\n`).join(''));
    return ids;
  };

  it('describes every guest with one virsh process per BATCH_GUESTS guests, each as its own calls would, and reports every answer', async () => {
    const ids = [A, B, ...more(BATCH_GUESTS - 1)];
    const answers: string[] = [];
    const guests = await driver.listGuests({ ...op(), onAnswer: (w) => answers.push(w) });
    // The lists, then BATCH_GUESTS + 1 guests in two batches: no guest asked on its own.
    expect(calls()).toHaveLength(3);
    expect(batches()).toHaveLength(3);
    // The first lists the connection: every guest, then each pair of lists that stands for dominfo's facts.
    expect(batches()[0]!.split('; ').filter((c) => !c.includes('echo '))).toEqual([
      'list --all --uuid', 'list --all --uuid --persistent', 'list --all --uuid --transient', 'list --all --uuid --autostart',
      'list --all --uuid --no-autostart', 'list --all --uuid --with-managed-save', 'list --all --uuid --without-managed-save',
    ]);
    expect(guestBatches()).toHaveLength(2);
    expect(batches().join('\n')).not.toContain('dominfo');
    for (const id of ids) expect(askedAlone(id)).toEqual([]);
    expect(guests.map((g) => g.id)).toEqual(ids);
    expect(guests.every((g) => g.undescribed === undefined)).toBe(true);
    expect(byId(guests, A)).toEqual({
      id: A, name: 'web', uri: 'qemu:///system', state: 'running', stateDetail: 'running (booted)', memoryKiB: 262144,
      persistent: true, autostart: false, hasSavedImage: false, policy: { order: 3, timeout: 90 }, saveBlockers: [],
    });
    // The batch asks only for the parts of the XML the facts come from.
    for (const id of ids) {
      for (const dumpxml of [`dumpxml --domain=${id}`, `dumpxml --inactive --domain=${id}`]) {
        expect(batches().join('\n')).toContain(`; ${dumpxml} --xpath ${DOMAIN_FACTS_XPATH} --wrap;`);
      }
    }
    // The same Guest as its own four calls make (getGuest, whole XML).
    for (const id of [A, ids[BATCH_GUESTS]!]) expect(byId(guests, id)).toEqual(await driver.getGuest(id, op()));
    // Each call of the batch that answered counts as an answer (the hung check).
    for (const id of ids) {
      for (const what of ['domstate', 'dumpxml', 'dumpxml --inactive']) expect(answers).toContain(`${what} of ${id}`);
    }
    expect(answers).toContain('list --all --uuid');
  });

  it('the lists stand for dominfo: a transient guest, one that autostarts and one with a managed save image are described by the batch as dominfo describes them', async () => {
    writeFileSync(join(dir, `transient-${A}`), '');
    writeFileSync(join(dir, `autostart-${A}`), '');
    writeFileSync(join(dir, `saved-${B}`), '');
    const guests = await driver.listGuests(op());
    for (const id of [A, B]) expect(askedAlone(id)).toEqual([]);
    expect(byId(guests, A)).toMatchObject({ persistent: false, autostart: true, hasSavedImage: false });
    expect(byId(guests, A)?.saveBlockers.join()).toMatch(/transient guest/);
    expect(byId(guests, B)).toMatchObject({ persistent: true, autostart: false, hasSavedImage: true });
    for (const id of [A, B]) expect(byId(guests, id)).toEqual(await driver.getGuest(id, op()));
  });

  it('a guest the lists do not agree on (on both lists of a pair, or on neither) is asked on its own, and dominfo decides', async () => {
    writeFileSync(join(dir, 'list--transient'), `${B}\n`);
    writeFileSync(join(dir, 'list--no-autostart'), `${B}\n`);
    const guests = await driver.listGuests(op());
    expect(askedAlone(B).sort()).toEqual(['dominfo', 'domstate', 'dumpxml', 'dumpxml']);
    expect(askedAlone(A).sort()).toEqual(['dominfo', 'domstate', 'dumpxml', 'dumpxml']);
    expect(guests.map((g) => [g.name, g.persistent, g.autostart, g.undescribed])).toEqual([['web', true, false, undefined], ['db', true, false, undefined]]);
  });

  it("a guest's dumpxml fails in the batch: that guest is asked on its own (and described), the others are not asked again", async () => {
    once('dumpxml', B, 'internal error: once');
    const guests = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(1);
    expect(askedAlone(A)).toEqual([]);
    expect(askedAlone(B).sort()).toEqual(['dominfo', 'domstate', 'dumpxml', 'dumpxml']);
    expect(byId(guests, B)).toMatchObject({ name: 'db', policy: { order: 3, timeout: 90 } });
    expect(guests.every((g) => g.undescribed === undefined)).toBe(true);
  });

  it("a guest whose selected XML has no name and uuid (<nodes/>: not a domain's) is asked on its own", async () => {
    writeFileSync(join(dir, `xml-${B}`), "<network><name>db</name></network>");
    const guests = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(1);
    expect(askedAlone(A)).toEqual([]);
    expect(askedAlone(B).sort()).toEqual(['dominfo', 'domstate', 'dumpxml', 'dumpxml']);
    expect(byId(guests, A)?.undescribed).toBeUndefined();
    expect(byId(guests, B)?.undescribed?.missing).toEqual(['policy', 'saveBlockers']);
  });

  it('a virsh without dumpxml --xpath: its guests are asked on their own, said once, and later listings read the whole XML in the batch', async () => {
    await driver.close();
    fake.remove();
    fake = writeFakeVirsh(script(dir), { xpath: false });
    driver = withBatchDeadline(10_000);
    const said = (): number => log.lines.filter((l) => l.level === 'info' && /has no dumpxml --xpath/.test(l.msg)).length;
    const before = said();
    const first = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(1);
    expect(guestBatches()[0]).toContain('--xpath');
    for (const id of [A, B]) expect(askedAlone(id).sort()).toEqual(['dominfo', 'domstate', 'dumpxml', 'dumpxml']);
    expect(first.map((g) => [g.name, g.policy, g.undescribed])).toEqual([['web', { order: 3, timeout: 90 }, undefined], ['db', { order: 3, timeout: 90 }, undefined]]);
    expect(said()).toBe(before + 1);
    const second = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(2);
    expect(guestBatches()[1]).not.toContain('--xpath');
    expect(guestBatches()[1]).toContain(`; dumpxml --inactive --domain=${B};`);
    for (const id of [A, B]) expect(askedAlone(id)).toHaveLength(4);
    expect(second).toEqual(first);
    expect(said()).toBe(before + 1);
  });

  it('a guest gone between the list and the batch is asked on its own, and left out (not found)', async () => {
    for (const sub of ['dominfo', 'domstate', 'dumpxml']) fail(sub, B, `failed to get domain '${B}'`);
    const guests = await driver.listGuests(op());
    expect(guests.map((g) => g.id)).toEqual([A]);
    expect(askedAlone(A)).toEqual([]);
    expect(askedAlone(B)).toHaveLength(4);
  });

  it('the batch hangs on one guest past its deadline: it is killed, the guests it had not described are asked alone; the hung one undescribed, the others in full', async () => {
    const ids = more(12);
    const last = ids[11]!;
    hang('dumpxml', last);
    await driver.close();
    driver = withBatchDeadline(1500);
    const guests = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(1);
    expect(guests).toHaveLength(14);
    expect(byId(guests, last)?.undescribed).toEqual({ missing: ['policy', 'saveBlockers'], problems: ['dumpxml: no answer within 1.5 s', 'dumpxml --inactive: no answer within 1.5 s'] });
    for (const g of guests.filter((x) => x.id !== last)) expect(g.undescribed, g.name).toBeUndefined();
    // What virsh had flushed (whole 4 KiB blocks) described the first guests; only the rest were asked alone.
    const alone = [A, B, ...ids].filter((id) => askedAlone(id).length > 0);
    expect(alone).toContain(last);
    expect(alone).not.toContain(A);
    expect(alone.length).toBeLessThan(14);
    expect(log.lines.some((l) => l.level === 'warn' && /describing 14 guests at once was not done within 1.5 s.*asked one by one/.test(l.msg))).toBe(true);
  });

  it('the batch fails altogether (virsh cannot connect): every guest is asked on its own', async () => {
    writeFileSync(join(dir, 'refuse-batch'), '');
    const guests = await driver.listGuests(op());
    expect(guestBatches()).toHaveLength(1);
    for (const id of [A, B]) expect(askedAlone(id)).toHaveLength(4);
    expect(guests.map((g) => [g.name, g.undescribed])).toEqual([['web', undefined], ['db', undefined]]);
    expect(log.lines.some((l) => l.level === 'warn' && /describing 2 guests at once failed: .*failed to connect to the hypervisor/.test(l.msg))).toBe(true);
  });

  it('dumpxml hangs for one guest: it is listed with dominfo and domstate facts, policy and blockers missing; the other in full', async () => {
    hang('dumpxml', B);
    await hangs();
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
      undescribed: { missing: ['policy', 'saveBlockers'], problems: ['dumpxml: no answer within 1.5 s', 'dumpxml --inactive: no answer within 1.5 s'] },
    });
    // Every answer is reported (the hung check counts them); the hanging calls are not.
    expect(answers).toContain('list --all --uuid');
    expect(answers).toContain(`dominfo of ${B}`);
    expect(answers).toContain(`dumpxml of ${A}`);
    expect(answers).not.toContain(`dumpxml of ${B}`);
  });

  it('nothing about a guest answers: still listed, by UUID, state unknown (not saved), every fact missing', async () => {
    for (const sub of ['dominfo', 'domstate', 'dumpxml']) hang(sub, B);
    await hangs();
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

  describe('guests hinted by libvirt\'s files (the list asked in the first batch)', () => {
    // A folder of libvirt-like XML files: one definition per hinted UUID.
    const hinting = async (ids: readonly string[]): Promise<void> => {
      const hintDir = join(dir, 'hints');
      mkdirSync(hintDir, { recursive: true });
      ids.forEach((id, i) => writeFileSync(join(hintDir, `h${i}.xml`), `<domain type='kvm'>\n  <name>h${i}</name>\n  <uuid>${id.toUpperCase()}</uuid>\n</domain>\n`));
      await driver.close();
      driver = withBatchDeadline(10_000, 1500, [hintDir]);
    };
    const listFirst = (batch: string): boolean => /^-q\|-c\|qemu:\/\/\/system\|echo @@rcl-[0-9a-f]+-0@@; list --all --uuid; echo /.test(batch);

    it('every guest hinted: one virsh process lists and describes them, the same guests as without hints', async () => {
      const plain = await driver.listGuests(op());
      const before = calls().length;
      await hinting([A, B]);
      const answers: string[] = [];
      const guests = await driver.listGuests({ ...op(), onAnswer: (w) => answers.push(w) });
      const mine = calls().slice(before);
      expect(mine).toHaveLength(1);
      expect(listFirst(mine[0]!)).toBe(true);
      expect(guests).toEqual(plain);
      expect(answers).toContain('list --all --uuid');
      expect(answers).toContain(`domstate of ${B}`);
    });

    it('a hint names a guest libvirtd does not have: it is neither listed nor asked on its own; a guest not hinted is described by a second batch', async () => {
      const gone = 'deadbeef-0000-4000-8000-000000000001';
      for (const sub of ['dominfo', 'domstate', 'dumpxml']) fail(sub, gone, `failed to get domain '${gone}'`);
      await hinting([gone, A]);
      const guests = await driver.listGuests(op());
      expect(guests.map((g) => [g.id, g.name, g.undescribed])).toEqual([[A, 'web', undefined], [B, 'db', undefined]]);
      expect(batches()).toHaveLength(2);
      expect(listFirst(batches()[0]!)).toBe(true);
      expect(batches()[0]).toContain(`domstate --reason --domain=${gone};`);
      expect(batches()[1]).toContain(`domstate --reason --domain=${B};`);
      expect(batches()[1]).not.toContain('list --all');
      for (const id of [gone, A, B]) expect(askedAlone(id)).toEqual([]);
      expect(calls().filter((l) => l.includes('|list|'))).toEqual([]);
    });

    it('the list fails in the batch: it is asked on its own, and the hinted guest described by the batch is not asked again', async () => {
      once('list', '', 'internal error: list once');
      await hinting([A, B]);
      const guests = await driver.listGuests(op());
      expect(guests.map((g) => g.name)).toEqual(['web', 'db']);
      expect(calls().filter((l) => l.includes('|list|--all|--uuid|'))).toHaveLength(1);
      expect(batches()).toHaveLength(1);
      for (const id of [A, B]) expect(askedAlone(id)).toEqual([]);
    });

    it('the batch cannot connect: the list and every guest are asked on their own', async () => {
      writeFileSync(join(dir, 'refuse-batch'), '');
      await hinting([A, B]);
      const guests = await driver.listGuests(op());
      expect(guests.map((g) => [g.name, g.undescribed])).toEqual([['web', undefined], ['db', undefined]]);
      expect(calls().filter((l) => l.includes('|list|--all|--uuid|'))).toHaveLength(1);
      for (const id of [A, B]) expect(askedAlone(id)).toHaveLength(4);
    });

    it('no guest at all: the empty list is asked again on its own, and nothing is listed', async () => {
      writeFileSync(join(dir, 'list'), '');
      await hinting([A]);
      expect(await driver.listGuests(op())).toEqual([]);
      expect(calls().filter((l) => l.includes('|list|--all|--uuid|'))).toHaveLength(1);
      expect(askedAlone(A)).toEqual([]);
    });
  });
});
