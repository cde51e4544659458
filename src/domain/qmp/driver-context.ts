// What the QMP driver's operations share: the guest's files, the monitor pool,
// the per-command deadline, and small helpers over them.
import type { FileHandle } from 'node:fs/promises';
import { deadline } from '../../util/deadline.js';
import type { Log } from '../../util/log.js';
import type { GuestState } from '../types.js';
import type { QmpGuestDefinition } from './guest-definition.js';
import type { MonitorPool } from './monitor-pool.js';
import type { QmpClient } from '../../qmp/qmp-client.js';
import type { QmpEventListener } from '../../qmp/qmp-events.js';
import { isDeadlineReason } from '../../qmp/abort.js';
import type { GuestRuntimePaths } from './qemu-process.js';
import type { SavedImagePaths } from './saved-image.js';

/** One guest with its files. */
export interface GuestFiles {
  def: QmpGuestDefinition;
  run: GuestRuntimePaths;
  saved: SavedImagePaths;
  /** Set for a QEMU running from the runtime directory whose definition is broken or gone. */
  problem?: string;
}

/** Points where tests put a fault into the driver's own steps (real processes cannot reach them on time). */
export interface QmpDriverHooks {
  /** The fsync of a save's image; default `fh.sync()` (a test injects a failing or hanging one). */
  syncImage?: (fh: FileHandle) => Promise<void>;
  /** Called right after a restore's `cont` was answered, before the image is removed (a test makes the guest stop here). */
  afterCont?: (guest: string) => Promise<void>;
}

/** The driver's shared parts. */
export interface DriverContext {
  pool: MonitorPool;
  /** Deadline of one QMP command or one QEMU launch, ms. */
  qemuTimeoutMs: number;
  /** `max-bandwidth` during a save, bytes/s. */
  saveBandwidth: number;
  /** Deadline of one file-system call (stat, rename, unlink, fsync of a directory), ms. */
  fsCallMs: number;
  /** Deadline of writing the rest of a save's stream and of its fsync, ms. */
  fsSyncMs: number;
  /** Test seams (see QmpDriverHooks). */
  hooks: QmpDriverHooks;
  log: Log | undefined;
  /** Report a lifecycle change. */
  emit(guest: string, event: string, detail: string): void;
}

/** `query-status` reply. */
export interface QmpStatus {
  status: string;
  running: boolean;
}

/** Run one QMP command within the context's deadline and `signal`. */
export async function qmpCommand<T = unknown>(ctx: DriverContext, qmp: QmpClient, command: string, args: Record<string, unknown> | undefined, signal: AbortSignal): Promise<T> {
  const d = deadline(ctx.qemuTimeoutMs, signal);
  try {
    return await qmp.execute<T>(command, args, { signal: d.signal });
  } finally {
    d.clear();
  }
}

/** The contract's state for a QEMU run state (QAPI RunState). */
export function stateOfRunState(status: string): GuestState {
  switch (status) {
    case 'running':
      return 'running';
    case 'suspended':
      return 'suspended';
    case 'paused':
    case 'prelaunch':
    case 'postmigrate':
    case 'finish-migrate':
    case 'save-vm':
    case 'restore-vm':
      return 'paused';
    case 'shutdown':
      return 'shutoff';
    default:
      return 'other';
  }
}

/** `query-migrate` reply (the parts we read). */
export interface QueryMigrate {
  status?: string;
  'error-desc'?: string;
  ram?: { total?: number; remaining?: number; transferred?: number };
}

/** How long to wait for a MIGRATION event before polling query-migrate. */
const MIGRATION_POLL_MS = 250;

/** The next migration status: from a MIGRATION event, or from query-migrate (with its details) when none came within the poll interval. */
export async function nextMigrationStatus(ctx: DriverContext, qmp: QmpClient, events: QmpEventListener, signal: AbortSignal): Promise<{ status: string; info?: QueryMigrate }> {
  const tick = deadline(MIGRATION_POLL_MS, signal);
  try {
    return { status: String((await events.next({ signal: tick.signal })).data['status'] ?? '') };
  } catch (err) {
    if (signal.aborted || !isDeadlineReason(tick.signal.reason)) throw err;
  } finally {
    tick.clear();
  }
  const info = await qmpCommand<QueryMigrate>(ctx, qmp, 'query-migrate', undefined, signal);
  return { status: info.status ?? '', info };
}
