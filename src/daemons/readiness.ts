// Whether libvirtd answers. At start: its socket accepting a connection (a
// connect is cheap, no process spawned), then one `virsh -c qemu:///system
// version` to confirm it answers, asked again only when it fails, all within
// the overall deadline.
import { connect } from 'node:net';
import type { Settings } from '../config/settings.js';
import { deadline, now, sleep } from '../util/deadline.js';
import { errorMessage } from '../util/error-message.js';
import { describeRun, runProcess } from '../util/run.js';

/** Per-call deadline of one `virsh version`. */
export const ANSWER_CALL_MS = 5000;

/** Pause between two asks: each ask is a virsh spawn, so not much shorter. */
export const ANSWER_POLL_MS = 50;

/** Pause between two connects to the socket (no spawn: short). */
export const SOCKET_POLL_MS = 10;

/**
 * How long the wait looks for the socket before it asks `virsh version` all
 * the same: virsh knows where its libvirt puts the socket (a build with
 * another run directory), SYSTEM_SOCKET is only the usual place.
 */
export const SOCKET_WAIT_MS = 3000;

/** The connection the readiness check uses. */
export const SYSTEM_URI = 'qemu:///system';

/** The socket virsh reaches libvirtd through for `qemu:///system` (libvirt's default run directory). */
export const SYSTEM_SOCKET = '/var/run/libvirt/libvirt-sock';

/** Ask libvirtd once; resolves to undefined when it answered, else to what went wrong. */
export async function askLibvirtd(settings: Settings, signal: AbortSignal, timeoutMs = ANSWER_CALL_MS): Promise<string | undefined> {
  const r = await runProcess([settings.virsh, '-c', SYSTEM_URI, 'version'], {
    timeoutMs,
    signal,
    killGraceMs: 500,
    env: { ...process.env, LC_ALL: 'C' },
  });
  return r.exitCode === 0 ? undefined : describeRun(r);
}

/** Whether a unix socket accepts a connection; resolves to undefined when it did (closed at once), else to why not. */
export function socketAccepts(path: string, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve('interrupted');
    const sock = connect(path);
    const end = (why: string | undefined): void => {
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(why);
    };
    const onAbort = (): void => end('interrupted');
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => end(undefined));
    sock.once('error', (err: NodeJS.ErrnoException) => end(`${path}: ${err.code ?? errorMessage(err)}`));
  });
}

/** How the wait reaches libvirtd; the defaults are the real ones (tests give their own). */
export interface ReadinessProbes {
  /** The socket to watch. */
  socket?: string;
  /** Connect to the socket once. */
  accepts?: (path: string, signal: AbortSignal) => Promise<string | undefined>;
  /** Ask libvirtd once (`virsh version`). */
  ask?: (signal: AbortSignal, timeoutMs: number) => Promise<string | undefined>;
  /** How long to look for the socket before asking anyway. */
  socketWaitMs?: number;
}

/**
 * Wait until libvirtd answers or `timeoutMs` passes: first until its socket
 * accepts a connection (up to SOCKET_WAIT_MS), then `virsh version` until it
 * answers. `stillRuns` is asked between tries: a dead daemon ends the wait at once.
 */
export async function waitUntilAnswering(
  settings: Settings,
  signal: AbortSignal,
  timeoutMs: number,
  stillRuns: () => Promise<boolean>,
  probes: ReadinessProbes = {},
): Promise<{ ok: true } | { ok: false; reason: string; died: boolean }> {
  const socket = probes.socket ?? SYSTEM_SOCKET;
  const accepts = probes.accepts ?? socketAccepts;
  const ask = probes.ask ?? ((s: AbortSignal, ms: number) => askLibvirtd(settings, s, ms));
  const dl = deadline(timeoutMs, signal);
  const start = now();
  const end = start + timeoutMs;
  const socketUntil = start + (probes.socketWaitMs ?? SOCKET_WAIT_MS);
  let last = 'no answer';
  // Whether the socket has accepted a connection, or the wait gave up looking for it.
  let socketDone = false;
  try {
    for (;;) {
      let pause = ANSWER_POLL_MS;
      if (!socketDone) {
        const err = await accepts(socket, dl.signal);
        if (err === undefined || now() >= socketUntil) socketDone = true;
        else {
          last = `its socket does not accept connections yet (${err})`;
          pause = SOCKET_POLL_MS;
        }
      }
      if (socketDone) {
        const err = await ask(dl.signal, Math.max(100, Math.min(ANSWER_CALL_MS, end - now())));
        if (err === undefined) return { ok: true };
        last = err;
      }
      if (!(await stillRuns())) return { ok: false, reason: last, died: true };
      if (dl.signal.aborted || now() >= end) return { ok: false, reason: signal.aborted ? 'interrupted' : last, died: false };
      await sleep(pause, dl.signal).catch(() => undefined);
    }
  } finally {
    dl.clear();
  }
}
