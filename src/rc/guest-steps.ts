// The seam between the daemon side of rc.libvirt (start/stop/status) and the
// guest side (plan, ladder, journal). The guest side fills these in.
import type { Settings } from '../config/settings.js';
import type { Log } from '../report/log.js';

/** What a guest step runs with. */
export interface GuestStepContext {
  settings: Settings;
  log: Log;
  /** Aborts on SIGINT/SIGTERM: no new work starts, what runs is brought to a safe state. */
  signal: AbortSignal;
  dryRun: boolean;
  /** Output stream for progress and the summary (a TTY gets live lines). */
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
}

/** The outcome of a guest step, for the summary and the exit code. */
export interface GuestStepOutcome {
  /** No guest was destroyed and nothing failed. */
  clean: boolean;
  /** Guests that had to be destroyed, by name. */
  destroyed: string[];
  /** Guests whose action failed, by name. */
  failed: string[];
}

/** Bring every active guest down at `stop` (per policy) or `shutdown` (ACPI for all). */
export async function stopGuests(_ctx: GuestStepContext, _mode: 'policy' | 'shutdown'): Promise<GuestStepOutcome> {
  throw new Error('stopGuests: not built yet');
}

/** Bring back, at `start`, the guests the last stop handled (ON_BOOT=restore). */
export async function startGuests(_ctx: GuestStepContext): Promise<GuestStepOutcome> {
  throw new Error('startGuests: not built yet');
}

/** A guest the journal says is waiting to be restored at the next start. */
export interface PendingGuest {
  uri: string;
  id: string;
  name: string;
  /** What stop did: `saved`, `shutdown`, `destroyed`... */
  action: string;
  /** State before stop: running or paused. */
  stateBefore: string;
}

/** The guests waiting to be restored (for `status`). */
export async function pendingGuests(_settings: Settings): Promise<PendingGuest[]> {
  return [];
}
