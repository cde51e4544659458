// An image older than the running guest. `start` restores a guest whenever
// NAME.save exists, so a NAME.save beside a QEMU that has run without being
// restored from it (booted by hand, or the image put there while it ran) must
// never be restored: the guest's disk is newer than that RAM. The rule:
// - a live QEMU makes its NAME.save stale once it has run: its run state is
//   one a guest reaches only by running (running, paused, suspended, or an
//   error or shutdown state), except `paused` in a QEMU launched to restore
//   (`-incoming`), which is how a restore waits, its image not yet marked,
//   before `cont`; `inmigrate` (a restore in progress, or a start killed
//   mid-restore), `prelaunch` (never ran) and the migration states
//   (`postmigrate`, `finish-migrate`: a save that just put its new image in
//   place) never do; a state that cannot be read never does;
// - the listing only says so (`problem` and `staleImage` of the guest, and
//   `stop` exits non-zero), and remembers which file it was (device, inode,
//   size, mtime);
// - the operations that end the guest's run (save, shutdown, destroy) and a
//   wait that sees it off, and a start, move it aside to NAME.save.stale-TIME
//   (rename, fsync of the directory), named in an error: never restored,
//   never deleted. A QEMU whose state they can read is judged again; one they
//   cannot, or one already off, only by the file the listing remembered, so
//   that a new image (a new file) is never taken for the old one. A move that
//   fails is an error naming the image; the operation goes on (the guest is
//   still saved or shut down).
import { errorMessage } from '../../util/error-message.js';
import { readProcess } from '../../proc/identity.js';
import type { DriverContext, GuestFiles } from './driver-context.js';
import { imageIdentity, moveStaleAside, removeIfExists } from './saved-image.js';

/** QEMU run states only a guest that has run reaches. */
const HAS_RUN = new Set(['running', 'paused', 'suspended', 'shutdown', 'guest-panicked', 'internal-error', 'io-error', 'watchdog', 'debug']);

/** Whether a QEMU in run state `status` (launched to restore: `incoming`) makes an image beside it stale. */
export function makesImageStale(status: string, incoming: boolean): boolean {
  if (!HAS_RUN.has(status)) return false;
  // A restore that completed waits paused until its image is marked: the image is its state.
  return !(incoming && status === 'paused');
}

/** Whether QEMU `pid` was launched to restore an image (`-incoming` on its command line); undefined when it cannot be read. */
export async function launchedToRestore(pid: number): Promise<boolean | undefined> {
  const info = await readProcess(pid);
  return info?.argv === undefined ? undefined : info.argv.includes('-incoming');
}

/** Whether the live QEMU `pid` in run state `status` makes an image beside it stale (false when that cannot be told). */
export async function isStaleBeside(pid: number, status: string): Promise<boolean> {
  if (!HAS_RUN.has(status)) return false;
  const incoming = await launchedToRestore(pid).catch(() => undefined);
  return incoming !== undefined && makesImageStale(status, incoming);
}

/** A live QEMU and its run state. */
export interface Live {
  pid: number;
  status: string;
}

/** The stale images the driver has seen, by guest, and moving them aside. */
export class StaleImages {
  private readonly seen = new Map<string, string>();

  constructor(private readonly ctx: DriverContext) {}

  /** The listing found `g`'s image (file `identity`) stale: remember which file it was. */
  remember(g: GuestFiles, identity: string | undefined): void {
    if (identity !== undefined) this.seen.set(g.def.name, identity);
  }

  /**
   * Move `g`'s image aside if it is stale: judged from the live QEMU when its state is given (or asked for), else only when
   * it is the very file the listing found stale. Never throws: a failure is an error naming the image.
   */
  async setAside(g: GuestFiles, liveOrAsk: Live | (() => Promise<Live | undefined>) | undefined, when: string): Promise<string | undefined> {
    const name = g.def.name;
    let stale = this.seen.has(name);
    // Nothing to judge it by: no live QEMU, and the listing found no stale image of this guest.
    if (liveOrAsk === undefined && !stale) return undefined;
    try {
      const identity = await imageIdentity(g.saved);
      if (identity === undefined) {
        this.seen.delete(name);
        return undefined;
      }
      // The run state is asked for only when there is an image to judge.
      const live = typeof liveOrAsk === 'function' ? await liveOrAsk() : liveOrAsk;
      stale = (live !== undefined && (await isStaleBeside(live.pid, live.status))) || this.seen.get(name) === identity;
      if (!stale) return undefined;
      const aside = await moveStaleAside(g.saved);
      this.seen.delete(name);
      await removeIfExists(g.saved.sidecar).catch(() => undefined);
      const why = live !== undefined ? `its QEMU (pid ${live.pid}) has run (${live.status}) without being restored from it` : 'the guest ran without being restored from it';
      this.ctx.log?.error(`${name}: ${g.saved.image} is older than the guest (${why}): never restored; set aside as ${aside} ${when}`);
      return aside;
    } catch (err) {
      if (!stale) {
        this.ctx.log?.warn(`${name}: could not check whether ${g.saved.image} is older than the guest ${when}: ${errorMessage(err)}`);
        return undefined;
      }
      this.ctx.log?.error(`${name}: ${g.saved.image} is older than the guest, and could not be set aside ${when}: ${errorMessage(err)}; move it away before the next start, or it is restored over a newer disk`);
      return undefined;
    }
  }
}
