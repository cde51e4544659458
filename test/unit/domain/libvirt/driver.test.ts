// The libvirt driver against a fake virsh: waits woken by the event stream,
// the fall back to polling when the stream dies, and output no real libvirtd
// gives (garbage, odd states).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLibvirtDriver, type LibvirtDriver } from '../../../../src/domain/libvirt/driver.js';
import { NotReachableError, OperationRefusedError, ProtocolError, TimedOutError } from '../../../../src/domain/errors.js';
import { createMemoryLog } from '../../../../src/util/log.js';
import { writeFakeVirsh, type FakeVirsh } from './fake-virsh.js';

const UUID = '084149e7-9171-411b-a0a7-4233aaefdf57';
const op = () => ({ signal: AbortSignal.timeout(10_000) });

// $4 is the subcommand (virsh -q -c URI SUB ...); files in $STATE_DIR steer the answers.
function script(stateDir: string, eventBody: string): string {
  return `D='${stateDir}'
case "$4" in
  domstate) if [ -f "$D/domstate-fails" ]; then echo 'error: failed to get domain state' >&2; exit 1; fi; cat "$D/state"; echo q >> "$D/queries" ;;
  shutdown) echo shutdown >> "$D/requests"; if [ -f "$D/shutdown-slow" ]; then sleep 0.8; fi ;;
  start) if [ -f "$D/start-hangs" ]; then exec sleep 600; fi; if [ -f "$D/start-warns" ]; then echo 'warning: the guest uses a deprecated machine type' >&2; fi; if [ -f "$D/start-fails" ]; then printf "error: Failed to start domain '%s'\\nerror: Requested operation is not valid: domain is already active\\n" "\${5#--domain=}" >&2; exit 1; fi; if [ -f "$D/start-paused" ]; then echo 'paused (restored)'; else echo 'running (restored)'; fi > "$D/state" ;;
  dominfo) printf 'Name:           web server\\nUUID:           ${UUID}\\nState:          running\\nMax memory:     131072 KiB\\nPersistent:     yes\\nAutostart:      disable\\nManaged save:   no\\n' ;;
  list) cat "$D/list" ;;
  version) exec sleep 600 ;;
  managedsave) if [ -f "$D/save-fails" ]; then echo 'paused (I/O error)' > "$D/state"; echo 'error: operation failed: No space left on device' >&2; exit 1; fi; echo 'shut off (saved)' > "$D/state" ;;
  resume) echo resume >> "$D/resumed"; echo 'running (unpaused)' > "$D/state" ;;
  event) ${eventBody} ;;
  *) echo "error: unexpected $4" >&2; exit 1 ;;
esac`;
}

describe('libvirt driver (fake virsh)', () => {
  let fake: FakeVirsh;
  let dir: string;
  let driver: LibvirtDriver | undefined;
  const log = createMemoryLog();
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rcl-drv-'));
    writeFileSync(join(dir, 'state'), 'running (booted)\n');
  });
  afterEach(async () => {
    await driver?.close();
    fake.remove();
    rmSync(dir, { recursive: true, force: true });
  });
  const make = (eventBody: string, extra: { pollMs?: number; callTimeoutMs?: number; longCallTimeoutMs?: number } = {}, echoErr = true): LibvirtDriver => {
    fake = writeFakeVirsh(script(dir, eventBody), { echoErr });
    driver = createLibvirtDriver({ uri: 'qemu:///system', virsh: fake.path, safetyPollMs: 600_000, log, ...extra });
    return driver;
  };

  it('ends a wait on the Stopped line of the event stream', async () => {
    const d = make(`sleep 0.3; echo "2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'web server': Stopped Shutdown"; exec sleep 600`);
    expect(await d.waitForState(UUID, ['shutoff'], op())).toBe('shutoff');
    expect(d.waitStats).toEqual({ byEvent: 1, byPoll: 0, immediate: 0 });
  });

  it('waiting for shutoff, asks for the state once: a Shutdown event of the guest costs no query, its Stopped ends the wait', async () => {
    const d = make(
      `sleep 0.2; echo "2026-11-26 22:47:35.100+0000: event 'lifecycle' for domain 'web server': Shutdown Finished after guest request"; sleep 0.3; echo "2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'web server': Stopped Shutdown"; exec sleep 600`,
    );
    expect(await d.waitForState(UUID, ['shutoff'], op())).toBe('shutoff');
    expect(readFileSync(join(dir, 'queries'), 'utf8')).toBe('q\n');
    expect(d.waitStats).toEqual({ byEvent: 1, byPoll: 0, immediate: 0 });
  });

  it('ignores events of other guests, garbage lines among them', async () => {
    const d = make(`echo 'garbage'; echo "event 'lifecycle' for domain 'web server 2': Stopped Shutdown"; exec sleep 600`);
    const ac = new AbortController();
    const waiting = d.waitForState(UUID, ['shutoff'], { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('enough')), 500);
    await expect(waiting).rejects.toThrow(/cut off/);
    expect(d.waitStats.byEvent).toBe(0);
  });

  it('falls back to polling when the event stream dies', async () => {
    const d = make(`echo 'error: failed to connect to the hypervisor' >&2; exit 1`, { pollMs: 50 });
    const waiting = d.waitForState(UUID, ['shutoff'], op());
    // The guest goes off only once the wait's first query has read its state (the fake marks a query after
    // answering it) and the stream has died, however slow the machine.
    for (let i = 0; i < 500 && (d.eventsAlive || !existsSync(join(dir, 'queries'))); i++) await new Promise((r) => setTimeout(r, 20));
    writeFileSync(join(dir, 'state'), 'shut off (destroyed)\n');
    expect(await waiting).toBe('shutoff');
    expect(d.eventsAlive).toBe(false);
    expect(d.waitStats.byPoll).toBe(1);
    expect(log.lines.some((l) => l.level === 'warn' && /event --loop --event lifecycle --timestamp ended .*failed to connect.*waits poll instead/.test(l.msg))).toBe(true);
  });

  it('a save given the state the caller last saw asks no domstate; without it, one is asked alongside the save', async () => {
    const d = make('exec sleep 600');
    await d.save(UUID, { ...op(), stateBefore: 'running' });
    expect(existsSync(join(dir, 'queries'))).toBe(false);
    writeFileSync(join(dir, 'state'), 'running (booted)\n');
    await d.save(UUID, op());
    for (let i = 0; i < 250 && !existsSync(join(dir, 'queries')); i++) await new Promise((r) => setTimeout(r, 20));
    expect(readFileSync(join(dir, 'queries'), 'utf8')).toBe('q\n');
  });

  it('a failed save puts the guest back to the state the caller gave: running is resumed, paused stays paused', async () => {
    const d = make('exec sleep 600');
    writeFileSync(join(dir, 'save-fails'), '');
    await expect(d.save(UUID, { ...op(), stateBefore: 'running' })).rejects.toThrow(/No space left on device/);
    expect(readFileSync(join(dir, 'resumed'), 'utf8')).toBe('resume\n');
    expect(readFileSync(join(dir, 'state'), 'utf8')).toBe('running (unpaused)\n');
    await expect(d.save(UUID, { ...op(), stateBefore: 'paused' })).rejects.toThrow(/No space left on device/);
    expect(readFileSync(join(dir, 'resumed'), 'utf8')).toBe('resume\n');
    expect(readFileSync(join(dir, 'state'), 'utf8')).toBe('paused (I/O error)\n');
  });

  it('answers a wait at once when the guest is there already', async () => {
    const d = make('exec sleep 600');
    expect(await d.waitForState(UUID, ['running', 'paused'], op())).toBe('running');
    expect(d.waitStats.immediate).toBe(1);
  });

  it('calls garbage from virsh a protocol error', async () => {
    const d = make('exec sleep 600');
    writeFileSync(join(dir, 'list'), ' Id   Name   State\n----\n 1 web server running\n');
    await expect(d.listGuests(op())).rejects.toBeInstanceOf(ProtocolError);
    writeFileSync(join(dir, 'state'), 'levitating (magic)\n');
    await expect(d.waitForState(UUID, ['shutoff'], op())).rejects.toThrow(/unknown domain state "levitating"/);
  });

  // The virsh processes the fake ran, one line each: its arguments joined by '|'.
  const calls = (): string[] => readFileSync(fake.callsFile, 'utf8').trim().split('\n');

  describe('start', () => {
    beforeEach(() => writeFileSync(join(dir, 'state'), 'shut off (saved)\n'));

    it('reads the state right after the start in the same virsh process', async () => {
      const d = make('exec sleep 600');
      expect(await d.start(UUID, op())).toBe('running');
      expect(calls()).toHaveLength(1);
      expect(calls()[0]).toMatch(new RegExp(`^-q\\|-c\\|qemu:///system\\|start --domain=${UUID}; echo --err @@rcl-[0-9a-f]{12}@@; echo @@rcl-[0-9a-f]{12}@@; domstate --reason --domain=${UUID}\\|`));
    });

    it("a start that fails throws its own error, as if it had run alone, though the domstate after it answered", async () => {
      const d = make('exec sleep 600');
      writeFileSync(join(dir, 'start-fails'), '');
      const err = await d.start(UUID, op()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OperationRefusedError);
      expect((err as Error).message).toBe(`-q -c qemu:///system start --domain=${UUID}: Failed to start domain '${UUID}' / Requested operation is not valid: domain is already active`);
      expect(readFileSync(join(dir, 'queries'), 'utf8')).toBe('q\n');
    });

    it('a start that printed a warning, not an error, has started', async () => {
      const d = make('exec sleep 600');
      writeFileSync(join(dir, 'start-warns'), '');
      expect(await d.start(UUID, op())).toBe('running');
    });

    it('a start cut at its deadline is named as the start alone', async () => {
      const d = make('exec sleep 600', { longCallTimeoutMs: 300 });
      writeFileSync(join(dir, 'start-hangs'), '');
      const err = await d.start(UUID, op()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimedOutError);
      expect((err as Error).message).toBe(`-q -c qemu:///system start --domain=${UUID}: not done within 300 ms (virsh killed)`);
    });

    it('a start whose state cannot be read after it has started all the same: no state, the caller asks', async () => {
      const d = make('exec sleep 600');
      writeFileSync(join(dir, 'domstate-fails'), '');
      expect(await d.start(UUID, op())).toBeUndefined();
      expect(readFileSync(join(dir, 'state'), 'utf8')).toBe('running (restored)\n');
      expect(calls()).toHaveLength(1);
    });

    it("on a virsh whose echo has no --err, starts on its own (nothing ran of the refused string), and from then on", async () => {
      const d = make('exec sleep 600', {}, false);
      expect(await d.start(UUID, op())).toBeUndefined();
      expect(readFileSync(join(dir, 'state'), 'utf8')).toBe('running (restored)\n');
      writeFileSync(join(dir, 'state'), 'shut off (saved)\n');
      expect(await d.start(UUID, op())).toBeUndefined();
      expect(calls().map((c) => c.split('|')[3]!.split(' ')[0])).toEqual(['start', 'start', 'start']);
      expect(calls().filter((c) => c.includes('echo --err'))).toHaveLength(1);
      expect(log.lines.some((l) => /echo has no --err: a call and the state after it are asked apart/.test(l.msg))).toBe(true);
    });

    it('started with paused: false, a guest that came back paused is resumed', async () => {
      const d = make('exec sleep 600');
      writeFileSync(join(dir, 'start-paused'), '');
      expect(await d.start(UUID, { ...op(), paused: false })).toBeUndefined();
      expect(readFileSync(join(dir, 'resumed'), 'utf8')).toBe('resume\n');
    });
  });

  it('a shutdown request reads the state after it in the same process, with the events already watched; a wait given that state asks none', async () => {
    const d = make(`sleep 2; echo "2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'web server': Stopped Shutdown"; exec sleep 600`);
    // The guest's name (which events carry) is known, as the listing makes it: here from a first wait.
    expect(await d.waitForState(UUID, ['running'], op())).toBe('running');
    expect(await d.shutdown(UUID, op())).toBe('running');
    expect(calls().filter((c) => c.includes(`shutdown --domain=${UUID}; echo --err @@rcl-`))).toHaveLength(1);
    expect(await d.waitForState(UUID, ['shutoff'], { ...op(), stateNow: 'running' })).toBe('shutoff');
    // One query by the first wait, one in the request's process; none by the wait given the state.
    expect(readFileSync(join(dir, 'queries'), 'utf8')).toBe('q\nq\n');
    expect(readFileSync(join(dir, 'requests'), 'utf8')).toBe('shutdown\n');
  });

  it('a guest that stops while its shutdown request runs is off, whatever the state read after it says', async () => {
    const d = make(`sleep 0.3; echo "2026-11-26 22:47:35.695+0000: event 'lifecycle' for domain 'web server': Stopped Shutdown"; exec sleep 600`);
    expect(await d.waitForState(UUID, ['running'], op())).toBe('running');
    writeFileSync(join(dir, 'shutdown-slow'), '');
    expect(await d.shutdown(UUID, op())).toBe('shutoff');
  });

  it("a shutdown request for a guest whose name is not known yet reads no state (a wait asks, after subscribing)", async () => {
    const d = make('exec sleep 600');
    expect(await d.shutdown(UUID, op())).toBeUndefined();
    expect(calls().filter((c) => c.split('|')[3] === 'shutdown')).toHaveLength(1);
  });

  it('gives up on a hung libvirtd at the call deadline: not reachable', async () => {
    const d = make('exec sleep 600', { callTimeoutMs: 300 });
    await expect(d.ping(op())).rejects.toBeInstanceOf(NotReachableError);
  });
});
