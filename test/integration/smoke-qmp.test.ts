// Smoke test of the plain-QEMU test bed: the test guest boots under TCG, its
// QMP socket greets, and the power button powers it off.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConsole } from '../helpers/console.js';
import { bootQemuGuest, cleanupAll, type QemuGuest } from '../helpers/qemu-guest.js';
import { requireTestbed } from '../helpers/testbed.js';

// A bare QMP line reader, enough for a smoke test (the real client lives in src/).
async function openQmp(path: string): Promise<{ next: () => Promise<Record<string, unknown>>; send: (cmd: string) => void; socket: Socket }> {
  const socket = connect(path);
  socket.setEncoding('utf8');
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  let buffer = '';
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const next = (): Promise<Record<string, unknown>> =>
    new Promise<string>((resolve, reject) => {
      const line = lines.shift();
      if (line !== undefined) return resolve(line);
      const timer = setTimeout(() => reject(new Error(`no QMP line from ${path} within 10 s`)), 10_000);
      waiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    }).then((l) => JSON.parse(l) as Record<string, unknown>);
  const send = (cmd: string): void => {
    socket.write(`${JSON.stringify({ execute: cmd, id: cmd })}\n`);
  };
  return { next, send, socket };
}

describe('plain QEMU test bed', () => {
  let guest: QemuGuest;
  let none: QemuGuest;

  beforeAll(async () => {
    requireTestbed();
    [guest, none] = await Promise.all([
      bootQemuGuest({ name: 'rcl smoke,qmp', memMiB: 128 }),
      bootQemuGuest({ name: 'rcl smoke none', machineNone: true }),
    ]);
  });

  afterAll(async () => {
    await cleanupAll();
  });

  it('boots the test guest to its ready line with a boot id', () => {
    expect(guest.bootId).toMatch(/^[0-9a-f-]{36}$/);
    expect(guest.isRunning()).toBe(true);
    expect(readConsole(guest.consolePath)).toContain(`RCL-READY boot=${guest.bootId}`);
  });

  it('greets on the QMP socket of a -machine none QEMU', async () => {
    const qmp = await openQmp(none.qmpSocket);
    try {
      const greeting = await qmp.next();
      expect(greeting).toHaveProperty('QMP.version.qemu.major');
    } finally {
      qmp.socket.destroy();
    }
  });

  it('powers the test guest off on system_powerdown over QMP', async () => {
    const qmp = await openQmp(guest.qmpSocket);
    try {
      expect(await qmp.next()).toHaveProperty('QMP');
      qmp.send('qmp_capabilities');
      expect(await qmp.next()).toEqual({ return: {}, id: 'qmp_capabilities' });
      qmp.send('system_powerdown');
      const exit = await Promise.race([
        guest.exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('QEMU still runs 60 s after system_powerdown')), 60_000)),
      ]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(readConsole(guest.consolePath)).toContain(`RCL-POWEROFF boot=${guest.bootId}`);
    } finally {
      qmp.socket.destroy();
    }
  });
});
