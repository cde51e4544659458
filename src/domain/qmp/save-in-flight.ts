// A save in flight, one per guest. Its rule: an abort (the caller's signal,
// `abort(id)`, the driver closing) rolls the save back only while QEMU has not
// said `completed`; from `completed` on the guest's state is in the image, so
// the save runs to its end (the image kept and renamed into place, QEMU quit)
// whatever the signal says, and a wait for it is bounded, never cut short into
// a rollback.
import { deadline } from '../../util/deadline.js';
import { OperationRefusedError } from '../errors.js';

/** Where a save is: capturing (abort rolls it back) or finishing (the image holds the state; it is kept). */
export type SavePhase = 'capturing' | 'finishing';

/** One guest's save: its abort, its phase, and a promise settled when it has ended either way. */
export class SaveInFlight {
  readonly #ac = new AbortController();
  #phase: SavePhase = 'capturing';
  #settle: () => void = () => undefined;
  /** Settles (never rejects) when the save has ended, done or rolled back. */
  readonly ended = new Promise<void>((resolve) => (this.#settle = resolve));

  constructor(readonly guest: string) {}

  /** The signal the capture runs with: aborted by abort() while capturing. */
  get signal(): AbortSignal {
    return this.#ac.signal;
  }

  get phase(): SavePhase {
    return this.#phase;
  }

  /** QEMU said `completed`: from now on abort() no longer reaches the save. */
  finishing(): void {
    this.#phase = 'finishing';
  }

  /** Abort the capture (a no-op once finishing). */
  abort(reason: unknown): void {
    if (this.#phase === 'capturing') this.#ac.abort(reason);
  }

  /** Mark the save ended. */
  end(): void {
    this.#settle();
  }

  /** Wait for the end, at most `ms` (or until `signal`); 'ended' or 'cut'. */
  async waitEnded(ms: number, signal?: AbortSignal): Promise<'ended' | 'cut'> {
    const d = deadline(ms, signal);
    try {
      const cut = new Promise<'cut'>((resolve) => {
        if (d.signal.aborted) resolve('cut');
        d.signal.addEventListener('abort', () => resolve('cut'), { once: true });
      });
      return await Promise.race([this.ended.then(() => 'ended' as const), cut]);
    } finally {
      d.clear();
    }
  }
}

/** The saves in flight of one driver, by guest. */
export class SavesInFlight {
  readonly #saves = new Map<string, SaveInFlight>();

  /** Register a save of `guest` (refused when one runs); `parent` aborting aborts it while it captures. */
  begin(guest: string, parent: AbortSignal): { save: SaveInFlight; done: () => void } {
    if (this.#saves.has(guest)) throw new OperationRefusedError(`cannot save ${guest}: a save is already running`, { guest });
    const save = new SaveInFlight(guest);
    this.#saves.set(guest, save);
    const onAbort = (): void => save.abort(parent.reason);
    if (parent.aborted) onAbort();
    else parent.addEventListener('abort', onAbort, { once: true });
    return {
      save,
      done: () => {
        parent.removeEventListener('abort', onAbort);
        if (this.#saves.get(guest) === save) this.#saves.delete(guest);
        save.end();
      },
    };
  }

  get(guest: string): SaveInFlight | undefined {
    return this.#saves.get(guest);
  }

  all(): SaveInFlight[] {
    return [...this.#saves.values()];
  }
}
