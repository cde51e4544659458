// The domain-control contract: what a driver (libvirt through virsh, or QEMU
// through QMP) offers to the orchestration. Both drivers implement it alike.
import type { BootAction, ShutdownAction } from '../config/settings.js';

/** A guest's state, reduced to what the orchestration acts on; `suspended`: asleep in ACPI S3 (libvirt `pmsuspended`, QEMU `suspended`), woken before a save or shutdown. */
export type GuestState = 'running' | 'paused' | 'suspended' | 'shutoff' | 'other';

/** A guest's own policy (libvirt metadata `urn:rc-libvirt:policy:1`, or the qmp definition's `policy`); absent keys fall back to the settings. */
export interface GuestPolicy {
  order?: number;
  onShutdown?: ShutdownAction;
  /** Seconds before the guest is destroyed. */
  timeout?: number;
  onBoot?: BootAction;
}

/** One guest as a driver lists it. */
export interface Guest {
  /** Stable identity: the libvirt UUID, or the qmp definition's name. */
  id: string;
  name: string;
  /** The connection the guest lives on (a libvirt URI, or `qmp://` + guests dir). */
  uri: string;
  state: GuestState;
  /** The driver's own word for the state and its reason, e.g. `paused (user)`. */
  stateDetail: string;
  /** Maximum memory in KiB (the size of a save, at worst). */
  memoryKiB: number;
  persistent: boolean;
  autostart: boolean;
  hasSavedImage: boolean;
  /** Which file the saved image is (qmp: device, inode, size, mtime), so that a new image is told from one the guest had before; absent when there is none or the driver cannot tell (libvirt). */
  savedImageId?: string;
  /** qmp: the saved image is older than the running guest (it ran without being restored from it): never restored, moved aside when the guest is saved, shut down or destroyed; `problem` says so too. */
  staleImage?: string;
  policy: GuestPolicy;
  /** Why a save would fail (host devices, shares, transient, invtsc...); empty when none is known. */
  saveBlockers: string[];
  /** A fault around the guest that the run must report even when the guest is handled (a qmp guest whose definition broke while it ran): the run exits non-zero. */
  problem?: string;
  /**
   * Facts the listing could not learn in time (a call that failed or did not
   * answer within the per-guest deadline); the fields above then hold safe
   * defaults (docs/guests.md). Absent when the guest was described in full.
   */
  undescribed?: Undescribed;
}

/** A fact of a guest the listing could not learn. */
export type GuestFact = 'identity' | 'state' | 'memory' | 'policy' | 'saveBlockers';

/** What the listing could not learn about a guest, and why. */
export interface Undescribed {
  /** The facts that hold defaults. */
  missing: GuestFact[];
  /** What failed, one line a call (e.g. `dumpxml: no answer within 15 s`). */
  problems: string[];
}

/** Options of a listing. */
export interface ListOptions extends OpOptions {
  /** Called each time the hypervisor's daemon answers one of the listing's calls (an answer, even a refusal, means it is not hung). */
  onAnswer?: (what: string) => void;
}

/** Progress of a save. */
export interface SaveProgress {
  /** 0..1 */
  fraction: number;
  processedBytes?: number;
  totalBytes?: number;
}

/** Options every operation takes. */
export interface OpOptions {
  /** Aborting it cuts the operation off; drivers leave the guest in a safe state. */
  signal: AbortSignal;
}

/** Options of a wait for a guest's state. */
export interface WaitOptions extends OpOptions {
  /** The guest's state as the caller read it just now, with the driver's events already watched (what shutdown resolved with): taken instead of the wait's first query. */
  stateNow?: GuestState;
}

/** Options of a save. */
export interface SaveOptions extends OpOptions {
  onProgress?: (progress: SaveProgress) => void;
  /**
   * The state the caller last saw the guest in (its listing, or a look after a failed try): what a
   * failed save puts it back to. Without it the driver asks, alongside the save.
   */
  stateBefore?: GuestState;
}

/** Options of a start. */
export interface StartOptions extends OpOptions {
  /** Start (or restore) paused; default: as the saved image says, else running. */
  paused?: boolean;
}

/** A lifecycle change seen by a driver (from events or polls). */
export interface LifecycleEvent {
  guestId: string;
  name: string;
  /** e.g. `Stopped`, `Started`, `Suspended`, `Resumed`, `Shutdown`, `Rebooted` */
  event: string;
  detail: string;
  /** performance.now() when we saw it */
  seenAt: number;
  /** The event's own wall-clock timestamp (ms since epoch), when the source gives one. */
  sourceTime?: number;
}

/** The operations a driver offers. Every one takes an AbortSignal; none waits without a deadline. */
export interface DomainDriver {
  readonly kind: 'libvirt' | 'qmp';
  /** The connection this driver acts on. */
  readonly uri: string;
  /** Where saved images go (for the free-space check of a plan). */
  readonly saveDirectory: string;
  /** Every guest, active or not; a guest that cannot be described in time is still listed, by id, with `undescribed` saying what is missing. */
  listGuests(opts: ListOptions): Promise<Guest[]>;
  /** One guest by id (throws GuestNotFoundError). */
  getGuest(id: string, opts: OpOptions): Promise<Guest>;
  /** Save the guest's RAM to disk and stop it (libvirt managedsave); resolves when the image is complete and the guest is off. On failure or abort the guest is left as it was (resumed if it ran). */
  save(id: string, opts: SaveOptions): Promise<void>;
  /** Abort an operation in flight on the guest (a save job), leaving the guest as it was. */
  abort(id: string, opts: OpOptions): Promise<void>;
  /** Start the guest, restoring its saved image when it has one; resolves with its state right after, when the driver read it along with the start (libvirt: in the same virsh process), else with nothing (the caller asks). */
  start(id: string, opts: StartOptions): Promise<GuestState | void>;
  /** Ask the guest to shut down (ACPI); resolves once the request is accepted, not when it is off: with its state right after, when the driver read it along with the request (libvirt), else with nothing. */
  shutdown(id: string, opts: OpOptions): Promise<GuestState | void>;
  /** Reboot the guest; resolves once it has been reset and runs again (the driver watches for the reset). */
  reboot(id: string, opts: OpOptions): Promise<void>;
  /** Resolves when the hypervisor's daemon answers; NotReachableError when it does not within `timeoutMs` (optional: a driver without a daemon to hang, such as qmp, has none; the plan asks it alongside the listing and calls the listing off when it does not answer). */
  ping?(opts: OpOptions & { timeoutMs?: number }): Promise<void>;
  /** Wake a guest asleep in ACPI S3 (`suspended`): libvirt `dompmwakeup`, QMP `system_wakeup` (optional: without it such a guest is asked to shut down as it is). */
  wake?(id: string, opts: OpOptions): Promise<void>;
  /** Resume a paused guest (optional: the orchestration resumes a paused guest before an ACPI shutdown, which a paused guest cannot act on). */
  resume?(id: string, opts: OpOptions): Promise<void>;
  /** Power the guest off at once (data in it may be lost). */
  destroy(id: string, opts: OpOptions): Promise<void>;
  /** Resolve with the state once the guest is in one of `states`; rejects when the signal aborts. */
  waitForState(id: string, states: readonly GuestState[], opts: WaitOptions): Promise<GuestState>;
  /** Subscribe to lifecycle events; returns the unsubscribe function. */
  onLifecycle(listener: (event: LifecycleEvent) => void): () => void;
  /** Release connections, event streams and sockets. */
  close(): Promise<void>;
}
