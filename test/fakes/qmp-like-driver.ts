// A scripted driver that behaves like the qmp driver (src/domain/qmp/qmp-driver.ts)
// in each way the ladder, restore, reboot, plan and the guest steps depend on:
// - kind 'qmp', no `ping` (plan lists at once), every guest persistent;
// - a save stops the guest first; a failed or aborted one is rolled back
//   (`cont`); when that fails too (`putBackFails`) the save throws saying the
//   guest may be left paused, and it is;
// - a save that completes and still fails (`saveAnswerLost`) fails as the real
//   one can once its image is in place: QEMU survived SIGKILL (it goes off);
// - abort cancels the save and waits until it has let go (`abortMs`); with no
//   save in flight it resolves;
// - destroy can fail (`destroyFails`: QEMU survived SIGKILL); of a guest
//   already off it resolves;
// - the listing can fail (`listFails`) or hang until its signal aborts (`listHangs`).
// - a guest listed live with a saved image has one older than it
//   (`staleImage`, `problem`); save, shutdown, destroy move it aside first, as
//   do a wait that sees the guest off and a start when it is the image the
//   listing found stale (`staleAsideFails`: the move fails, the image stays);
//   each new image is a new file (`savedImageId`).
// Still different from the real driver: no QEMU processes, pidfiles, monitor
// sockets or image files; a state query never reports `other` for a monitor
// held by another client unless the guest is given in that state; waits are
// woken at once by every state change (the real one polls every 200 ms);
// a QEMU stuck on its way out (killed after EXIT_GRACE_MS) is not modelled.
import { createScriptedDriver, type FakeDriver, type FakeDriverOptions, type FakeGuest } from './fake-driver.js';

export type { FakeCall, FakeConnection, FakeDriver, FakeGuest, FakeScript } from './fake-driver.js';

/** A qmp-like fake driver. */
export interface QmpLikeDriver extends FakeDriver {
  readonly kind: 'qmp';
}

/** Build a qmp-like fake over the given guests (id = name; uri default `qmp:///fake/guests`). */
export function qmpLikeDriver(list: FakeGuest[], opts: Omit<FakeDriverOptions, 'connection'> & { connection?: Omit<FakeDriverOptions['connection'] & object, 'pingMs' | 'pingFails'> } = {}): QmpLikeDriver {
  return createScriptedDriver('qmp', list, opts) as QmpLikeDriver;
}
