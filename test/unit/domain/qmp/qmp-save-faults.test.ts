// The qmp driver's files under faults: a save aborted once QEMU said
// `completed` keeps its image (and quits QEMU, never resumes it); a failing or
// hanging fsync keeps the image and names it in an error; an abort before
// `completed` rolls back (migrate_cancel, cont, no file); close() ends within
// its deadline; a QEMU running from the runtime directory whose definition is
// broken or gone is listed with the problem; an image older than the running
// guest is named by the listing and moved aside by a save, a shutdown, a
// destroy, or the wait that sees the guest off, never for a QEMU that has not
// run from a boot (a restore in progress, or waiting paused for its mark).
// The QEMU is a stand-in: the test's own child process (its command line names
// the guest's QMP socket, so the driver's /proc identity check accepts it) and
// a scripted monitor on a real unix socket that, on `migrate`, connects to the
// driver's save socket and sends the "state", as QEMU does.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { qmpOption } from '../../../../src/domain/qmp/qemu-process.js';
import { createQmpDriver, type QmpDriverOptions } from '../../../../src/domain/qmp/qmp-driver.js';
import { createMemoryLog } from '../../../../src/util/log.js';
import { GREETING } from './fake-qmp-server.js';

const STATE = Buffer.alloc(256 * 1024, 7);
const sig = (ms = 10_000): AbortSignal => AbortSignal.timeout(ms);

describe('qmp driver: what a save leaves on disk under faults', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let server: Server | undefined;
  afterEach(async () => {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  interface Qemu {
    guestsDir: string;
    runDir: string;
    saveDir: string;
    /** Every command the monitor got, in order. */
    commands: string[];
    /** Resolve it to let the migration complete (default: at once). */
    exited: Promise<NodeJS.Signals | null>;
  }

  /**
   * A running guest `name` whose QEMU migrates when asked; `holdMigration` keeps it active until the returned release is called.
   * `status`: its run state (default running); `incoming`: launched to restore (`-incoming` on its command line);
   * `olderImage`: a NAME.save (and sidecar) put beside it.
   */
  async function fakeQemu(name: string, opts: { definition?: string; holdMigration?: boolean; status?: string; incoming?: boolean; olderImage?: string } = {}): Promise<Qemu & { release: () => void }> {
    dir = mkdtempSync(join(tmpdir(), 'rcl-qmpsave-'));
    const guestsDir = join(dir, 'guests');
    const runDir = join(dir, 'run');
    const saveDir = join(dir, 'save');
    mkdirSync(guestsDir);
    mkdirSync(runDir, { mode: 0o700 });
    writeFileSync(join(guestsDir, `${name}.json`), opts.definition ?? JSON.stringify({ argv: ['qemu-system-x86_64', '-m', '64'] }));
    const qmpPath = join(runDir, `${name}.qmp`);
    child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', '-qmp', qmpOption(qmpPath), ...(opts.incoming ? ['-incoming', 'defer'] : [])], { stdio: 'ignore' });
    if (opts.olderImage !== undefined) {
      mkdirSync(saveDir, { mode: 0o700 });
      writeFileSync(join(saveDir, `${name}.save`), opts.olderImage);
      writeFileSync(join(saveDir, `${name}.json`), JSON.stringify({ version: 1, name, wasRunning: true, savedAt: 1 }));
    }
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.once('exit', (_code, s) => resolve(s)));
    writeFileSync(join(runDir, `${name}.pid`), `${child.pid}\n`);
    const commands: string[] = [];
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    if (!opts.holdMigration) release();
    let status = opts.status ?? 'running';
    let migration = 'none';
    server = createServer((s: Socket) => {
      s.on('error', () => undefined);
      const send = (o: unknown): void => void s.write(`${JSON.stringify(o)}\n`);
      send(GREETING);
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string; arguments?: { uri?: string } };
          buf = buf.slice(nl + 1);
          commands.push(cmd.execute);
          const reply = (ret: unknown = {}): void => send({ return: ret, id: cmd.id });
          switch (cmd.execute) {
            case 'query-status':
              reply({ status, running: status === 'running' });
              break;
            case 'stop':
              status = 'paused';
              reply();
              break;
            case 'cont':
              status = 'running';
              reply();
              break;
            case 'query-migrate':
              reply({ status: migration, ram: { total: STATE.length, remaining: migration === 'completed' ? 0 : STATE.length } });
              break;
            case 'migrate': {
              reply();
              migration = 'active';
              const path = (cmd.arguments?.uri ?? '').replace(/^unix:/, '');
              const out = createConnection({ path });
              out.on('error', () => undefined);
              void released.then(() => {
                if (migration !== 'active') return;
                // As QEMU: `completed` once its last bytes are in the socket, before the reader has them all.
                out.write(STATE.subarray(0, STATE.length / 2), () => {
                  migration = 'completed';
                  status = 'postmigrate';
                  send({ event: 'MIGRATION', data: { status: 'completed' }, timestamp: { seconds: 1, microseconds: 0 } });
                  setTimeout(() => out.end(STATE.subarray(STATE.length / 2)), 150);
                });
              });
              break;
            }
            case 'migrate_cancel':
              if (migration === 'active') migration = 'cancelled';
              reply();
              break;
            case 'quit':
              reply();
              child?.kill('SIGKILL');
              break;
            default:
              reply();
          }
        }
      });
    });
    await new Promise<void>((resolve) => server!.listen(qmpPath, resolve));
    return { guestsDir, runDir, saveDir, commands, exited, release };
  }

  const driverOf = (q: Qemu, extra: Partial<QmpDriverOptions> = {}) =>
    createQmpDriver({ guestsDir: q.guestsDir, runDir: q.runDir, saveDir: q.saveDir, qemuTimeoutMs: 2000, ...extra });

  it('an abort once QEMU said `completed` keeps the whole image in place and quits QEMU; nothing resumes the guest', async () => {
    const q = await fakeQemu('g');
    const d = driverOf(q);
    const ac = new AbortController();
    try {
      await d.save('g', { signal: ac.signal, onProgress: (p) => (p.fraction === 1 ? ac.abort(new Error('SIGTERM')) : undefined) });
    } finally {
      await d.close();
    }
    expect(ac.signal.aborted).toBe(true);
    expect(readFileSync(join(q.saveDir, 'g.save')).equals(STATE)).toBe(true);
    expect(readdirSync(q.saveDir).sort()).toEqual(['g.json', 'g.save']);
    expect(q.commands).not.toContain('cont');
    expect(q.commands).not.toContain('migrate_cancel');
    expect(q.commands.at(-1)).toBe('quit');
    expect(await q.exited).toBe('SIGKILL');
  });

  it('the ladder\'s abort(id) and destroy at the deadline, once the save is past `completed`, wait for it to finish: the image is kept, nothing resumes the guest', async () => {
    const q = await fakeQemu('g');
    let syncing: () => void = () => undefined;
    const synced = new Promise<void>((resolve) => (syncing = resolve));
    const d = driverOf(q, { hooks: { syncImage: (fh) => (syncing(), new Promise<void>((r) => setTimeout(r, 300)).then(() => fh.sync())) } });
    try {
      const saving = d.save('g', { signal: sig() });
      await synced;
      await d.abort('g', { signal: sig() });
      await d.destroy('g', { signal: sig() });
      await saving;
    } finally {
      await d.close();
    }
    expect(readFileSync(join(q.saveDir, 'g.save')).equals(STATE)).toBe(true);
    expect(q.commands).not.toContain('cont');
    expect(q.commands).not.toContain('migrate_cancel');
    expect(q.commands.filter((c) => c === 'quit')).toHaveLength(1);
  });

  it('a running guest that has a marked image (a run died between its restore\'s `cont` and the removal) is saved anew; the stale mark goes', async () => {
    const q = await fakeQemu('g');
    mkdirSync(q.saveDir, { mode: 0o700 });
    writeFileSync(join(q.saveDir, 'g.save.restoring'), 'the state it ran from');
    const d = driverOf(q);
    try {
      await d.save('g', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(readdirSync(q.saveDir).sort()).toEqual(['g.json', 'g.save']);
    expect(readFileSync(join(q.saveDir, 'g.save')).equals(STATE)).toBe(true);
  });

  it('an fsync that fails keeps the image, quits QEMU, and says so naming the file', async () => {
    const q = await fakeQemu('g');
    const log = createMemoryLog();
    const d = driverOf(q, { log, hooks: { syncImage: () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })) } });
    try {
      await d.save('g', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(readFileSync(join(q.saveDir, 'g.save')).equals(STATE)).toBe(true);
    expect(q.commands).not.toContain('cont');
    const err = log.lines.find((l) => l.level === 'error');
    expect(err?.msg).toContain(join(q.saveDir, 'g.save'));
    expect(err?.msg).toContain('EIO');
  });

  it('an fsync that does not return is given up at its deadline: the image is kept, the save ends, close() does not wait for it', async () => {
    const q = await fakeQemu('g');
    const log = createMemoryLog();
    const d = driverOf(q, { log, fsSyncMs: 300, hooks: { syncImage: () => new Promise<void>(() => undefined) } });
    try {
      await d.save('g', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(existsSync(join(q.saveDir, 'g.save'))).toBe(true);
    expect(log.lines.find((l) => l.level === 'error')?.msg).toMatch(/fsync of .*g\.save\.partial.*did not answer/);
    expect(q.commands).not.toContain('cont');
  });

  it('an abort before `completed` rolls back: migrate_cancel, cont, no file left', async () => {
    const q = await fakeQemu('g', { holdMigration: true });
    const d = driverOf(q);
    const ac = new AbortController();
    try {
      const saving = d.save('g', { signal: ac.signal });
      // Wait until the migration runs, then abort (SIGTERM).
      for (let i = 0; i < 200 && !q.commands.includes('migrate'); i++) await new Promise((r) => setTimeout(r, 10));
      ac.abort(new Error('SIGTERM'));
      await expect(saving).rejects.toMatchObject({ code: 'interrupted' });
    } finally {
      await d.close();
      q.release();
    }
    expect(q.commands).toContain('migrate_cancel');
    expect(q.commands).toContain('cont');
    expect(readdirSync(q.saveDir)).toEqual([]);
  });

  it('close() during a save still capturing rolls it back and returns', async () => {
    const q = await fakeQemu('g', { holdMigration: true });
    const d = driverOf(q);
    const saving = d.save('g', { signal: sig() });
    saving.catch(() => undefined);
    for (let i = 0; i < 200 && !q.commands.includes('migrate'); i++) await new Promise((r) => setTimeout(r, 10));
    await d.close();
    q.release();
    await expect(saving).rejects.toThrow();
    expect(q.commands).toContain('cont');
    expect(readdirSync(q.saveDir)).toEqual([]);
  });

  it('a QEMU running from the runtime directory with a broken definition is listed with the problem and cannot be saved', async () => {
    const q = await fakeQemu('g', { definition: '{"argv": ["qemu-system-x86_64"], "policy": {"on_shutdown": "nap"}}' });
    const log = createMemoryLog();
    const d = driverOf(q, { log });
    try {
      const guests = await d.listGuests({ signal: sig() });
      expect(guests.map((g) => g.id)).toEqual(['g']);
      expect(guests[0]).toMatchObject({ state: 'running', policy: {} });
      expect(guests[0]?.problem).toContain('g.json: policy.on_shutdown');
      expect(guests[0]?.saveBlockers.join(' ')).toContain('g.json: policy.on_shutdown');
      await expect(d.save('g', { signal: sig() })).rejects.toThrow(/cannot save g: its definition is broken/);
      expect(log.lines.some((l) => l.level === 'error' && l.msg.includes('QEMU runs from'))).toBe(true);
      // Gone entirely: still found by its pidfile.
      rmSync(join(q.guestsDir, 'g.json'));
      expect((await d.getGuest('g', { signal: sig() })).problem).toContain('no ');
      expect((await d.listGuests({ signal: sig() })).map((g) => g.id)).toEqual(['g']);
    } finally {
      await d.close();
    }
  });

  // An image older than the running guest (src/domain/qmp/stale-image.ts).
  const staleOf = (q: Qemu, name: string): string | undefined => readdirSync(q.saveDir).find((f) => f.startsWith(`${name}.save.stale-`));

  it('an older image beside a running guest: the listing names it and moves nothing; a shutdown moves it aside (kept, named in an error) before the power button', async () => {
    const q = await fakeQemu('web', { olderImage: 'the older image' });
    const log = createMemoryLog();
    const d = driverOf(q, { log });
    try {
      const [g] = await d.listGuests({ signal: sig() });
      expect(g).toMatchObject({ state: 'running', hasSavedImage: true, staleImage: join(q.saveDir, 'web.save') });
      expect(g!.problem).toContain(`${join(q.saveDir, 'web.save')} is older than the running guest`);
      expect(readdirSync(q.saveDir).sort()).toEqual(['web.json', 'web.save']);
      await d.shutdown('web', { signal: sig() });
      const aside = staleOf(q, 'web');
      expect(readdirSync(q.saveDir)).not.toContain('web.save');
      expect(readFileSync(join(q.saveDir, aside!), 'utf8')).toBe('the older image');
      expect(q.commands).toContain('system_powerdown');
      const err = log.lines.find((l) => l.level === 'error' && l.msg.includes('is older than the guest'));
      expect(err?.msg).toContain(join(q.saveDir, aside!));
      expect(err?.msg).toContain('before its shutdown');
      expect((await d.getGuest('web', { signal: sig() })).hasSavedImage).toBe(false);
    } finally {
      await d.close();
    }
  });

  it('an older image beside a running guest: a save that is aborted leaves none to restore (moved aside before the save), the guest runs on', async () => {
    const q = await fakeQemu('g', { olderImage: 'the older image', holdMigration: true });
    const log = createMemoryLog();
    const d = driverOf(q, { log });
    const ac = new AbortController();
    try {
      const saving = d.save('g', { signal: ac.signal, onProgress: () => ac.abort(new Error('SIGTERM')) });
      await expect(saving).rejects.toThrow();
    } finally {
      await d.close();
    }
    expect(q.commands).toContain('cont');
    expect(readdirSync(q.saveDir).filter((f) => !f.startsWith('g.save.stale-'))).toEqual([]);
    expect(readFileSync(join(q.saveDir, staleOf(q, 'g')!), 'utf8')).toBe('the older image');
    expect(log.lines.some((l) => l.level === 'error' && l.msg.includes('before its save'))).toBe(true);
  });

  it('an older image beside a running guest: a save that completes puts the new image in its place; the older one is kept aside', async () => {
    const q = await fakeQemu('g', { olderImage: 'the older image' });
    const d = driverOf(q, { log: createMemoryLog() });
    try {
      await d.save('g', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(readFileSync(join(q.saveDir, 'g.save')).equals(STATE)).toBe(true);
    expect(readFileSync(join(q.saveDir, staleOf(q, 'g')!), 'utf8')).toBe('the older image');
    expect(JSON.parse(readFileSync(join(q.saveDir, 'g.json'), 'utf8'))).toMatchObject({ wasRunning: true });
  });

  it('a restore in progress (inmigrate) keeps its image: not named by the listing, not moved by a shutdown or a destroy', async () => {
    const q = await fakeQemu('mid', { olderImage: 'the state being restored', status: 'inmigrate', incoming: true });
    const log = createMemoryLog();
    const d = driverOf(q, { log });
    try {
      const [g] = await d.listGuests({ signal: sig() });
      expect(g).toMatchObject({ hasSavedImage: true });
      expect(g!.staleImage).toBeUndefined();
      expect(g!.problem).toBeUndefined();
      await d.shutdown('mid', { signal: sig() });
      await d.destroy('mid', { signal: sig() });
      expect(readFileSync(join(q.saveDir, 'mid.save'), 'utf8')).toBe('the state being restored');
      expect(log.lines.filter((l) => l.level === 'error')).toEqual([]);
    } finally {
      await d.close();
    }
  });

  it('paused, launched to restore (a restore waits paused for its mark): the image is kept', async () => {
    const q = await fakeQemu('held', { olderImage: 'the state being restored', status: 'paused', incoming: true });
    const d = driverOf(q, { log: createMemoryLog() });
    try {
      expect((await d.getGuest('held', { signal: sig() })).staleImage).toBeUndefined();
      await d.destroy('held', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(readdirSync(q.saveDir)).toContain('held.save');
  });

  it('paused, booted: the image is stale, and a destroy moves it aside', async () => {
    const q = await fakeQemu('booted', { olderImage: 'the older image', status: 'paused' });
    const d = driverOf(q, { log: createMemoryLog() });
    try {
      expect((await d.getGuest('booted', { signal: sig() })).staleImage).toBe(join(q.saveDir, 'booted.save'));
      await d.destroy('booted', { signal: sig() });
    } finally {
      await d.close();
    }
    expect(readdirSync(q.saveDir)).not.toContain('booted.save');
    expect(staleOf(q, 'booted')).toBeDefined();
  });

  it('off by itself after the listing found its image stale: the wait that sees it off moves it aside; a new image (another file) is never taken for it', async () => {
    const q = await fakeQemu('gone', { olderImage: 'the older image' });
    const d = driverOf(q, { log: createMemoryLog() });
    try {
      expect((await d.getGuest('gone', { signal: sig() })).staleImage).toBeDefined();
      // The guest powers off by itself: its QEMU exits.
      child!.kill('SIGKILL');
      await q.exited;
      expect(await d.waitForState('gone', ['shutoff'], { signal: sig() })).toBe('shutoff');
      expect(readdirSync(q.saveDir)).not.toContain('gone.save');
      expect(staleOf(q, 'gone')).toBeDefined();
      // A new image in its place (a new file, renamed in as a save does) is kept, and so at a start it would be restored.
      writeFileSync(join(q.saveDir, '.new'), 'a new image');
      renameSync(join(q.saveDir, '.new'), join(q.saveDir, 'gone.save'));
      expect(await d.waitForState('gone', ['shutoff'], { signal: sig() })).toBe('shutoff');
      expect(readFileSync(join(q.saveDir, 'gone.save'), 'utf8')).toBe('a new image');
    } finally {
      await d.close();
    }
  });
});
