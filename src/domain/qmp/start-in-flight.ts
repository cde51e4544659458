// A start in flight, one per guest. Its rule: a guest is started (booted or
// restored from its image) by one operation at a time, so one image is never
// fed to two QEMUs; a second start while one runs is refused.
import { OperationRefusedError } from '../errors.js';

/** The starts in flight of one driver. */
export class StartsInFlight {
  readonly #starting = new Set<string>();

  /** Run `body` as the only start of `guest`. */
  async run<T>(guest: string, body: () => Promise<T>): Promise<T> {
    if (this.#starting.has(guest)) throw new OperationRefusedError(`cannot start ${guest}: it is being started already`, { guest });
    this.#starting.add(guest);
    try {
      return await body();
    } finally {
      this.#starting.delete(guest);
    }
  }
}
