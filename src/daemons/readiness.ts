// Whether libvirtd answers: `virsh -c qemu:///system version`, each call with
// its own short deadline, retried until the overall deadline.
import type { Settings } from '../config/settings.js';
import { deadline, now, sleep } from '../util/deadline.js';
import { describeRun, runProcess } from '../util/run.js';

/** Per-call deadline of one `virsh version`. */
export const ANSWER_CALL_MS = 5000;

/** The connection the readiness check uses. */
export const SYSTEM_URI = 'qemu:///system';

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

/** Wait until libvirtd answers or `timeoutMs` passes; `stillRuns` is asked between tries (a dead daemon ends the wait at once). */
export async function waitUntilAnswering(
  settings: Settings,
  signal: AbortSignal,
  timeoutMs: number,
  stillRuns: () => Promise<boolean>,
): Promise<{ ok: true } | { ok: false; reason: string; died: boolean }> {
  const dl = deadline(timeoutMs, signal);
  const end = now() + timeoutMs;
  let last = 'no answer';
  try {
    for (;;) {
      const err = await askLibvirtd(settings, dl.signal, Math.max(100, Math.min(ANSWER_CALL_MS, end - now())));
      if (err === undefined) return { ok: true };
      last = err;
      if (!(await stillRuns())) return { ok: false, reason: last, died: true };
      if (dl.signal.aborted || now() >= end) return { ok: false, reason: signal.aborted ? 'interrupted' : last, died: false };
      await sleep(250, dl.signal).catch(() => undefined);
    }
  } finally {
    dl.clear();
  }
}
