// The shutdown watch of a guest: the monitor connection that sent the power
// button press, held until QEMU exits (or a wait takes it over, or
// SHUTDOWN_HOLD_MS pass), and the moment the guest's own SHUTDOWN was seen.
// Its rule: between the press and QEMU's exit no new monitor connection is
// opened. QEMU sends events to negotiated connections only (a SHUTDOWN between
// two connections is lost), and QEMU 7.2 can hang for ever on its way out when
// a command (a new connection's `qmp_capabilities`) is in flight as it exits;
// a QEMU still there EXIT_GRACE_MS after its guest's SHUTDOWN is killed.
import type { MonitorLease } from './monitor-pool.js';

/** How long a QEMU may take to exit after its guest shut down before it is killed. */
export const EXIT_GRACE_MS = 10_000;
/** How long the connection of a press is held at most when nobody waits for the guest to go off. */
export const SHUTDOWN_HOLD_MS = 60_000;

/** The shutdown watches of one driver, by guest. */
export class ShutdownWatches {
  readonly #held = new Map<string, { lease: MonitorLease; timer: NodeJS.Timeout }>();
  readonly #guestDownAt = new Map<string, number>();

  /** Hold `lease` (the press's connection) for `guest`; a second one is released at once. */
  hold(guest: string, lease: MonitorLease): void {
    if (this.#held.has(guest)) {
      void lease.release();
      return;
    }
    const timer = setTimeout(() => this.letGo(guest, lease), SHUTDOWN_HOLD_MS);
    timer.unref();
    this.#held.set(guest, { lease, timer });
    void lease.qmp.closed.then(() => this.letGo(guest, lease));
  }

  /** Release the held connection of `guest` (only `lease`'s, when given). */
  letGo(guest: string, lease?: MonitorLease): void {
    const h = this.#held.get(guest);
    if (!h || (lease && h.lease !== lease)) return;
    this.#held.delete(guest);
    clearTimeout(h.timer);
    void h.lease.release();
  }

  /** The guest's OS shut down (QMP SHUTDOWN with guest=true). */
  guestShutDown(guest: string, at: number): void {
    this.#guestDownAt.set(guest, at);
  }

  /** When the guest's OS last shut down, if it did since it was started. */
  guestDownAt(guest: string): number | undefined {
    return this.#guestDownAt.get(guest);
  }

  /** Forget the guest's shutdown (it starts again, or its stuck QEMU was killed). */
  forget(guest: string): void {
    this.#guestDownAt.delete(guest);
  }

  /** Release every held connection. */
  letGoAll(): void {
    for (const guest of [...this.#held.keys()]) this.letGo(guest);
  }
}
