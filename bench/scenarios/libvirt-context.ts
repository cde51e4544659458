// What the libvirt scenarios share: the bed, our program, libvirt-guests.sh,
// checks that a round left the guests as expected, and getting back to a
// known state (daemons up, guests off) after a failed round.
import { performance } from 'node:perf_hooks';
import { startLibvirtDaemons } from '../../test/helpers/daemons.js';
import { sleep } from '../../test/helpers/process.js';
import { runVirsh } from '../../test/helpers/virsh.js';
import { activeGuestUuids, type BenchGuest, type LibvirtBed } from '../lib/libvirt-bed.js';
import type { LibvirtGuests } from '../lib/libvirt-guests.js';
import type { Ours } from '../lib/ours.js';

/** Shared by the libvirt scenarios. */
export interface LibvirtContext {
  bed: LibvirtBed;
  ours: Ours;
  lg: LibvirtGuests;
  log: (msg: string) => void;
}

// Throws unless exactly these guests are active.
export async function expectActive(guests: readonly Pick<BenchGuest, 'name' | 'uuid'>[], after: string): Promise<void> {
  const active = new Set(await activeGuestUuids());
  const missing = guests.filter((g) => !active.has(g.uuid)).map((g) => g.name);
  if (missing.length > 0) throw new Error(`after ${after}: not running: ${missing.join(', ')}`);
}

// Throws unless none of these guests is active.
export async function expectInactive(guests: readonly Pick<BenchGuest, 'name' | 'uuid'>[], after: string): Promise<void> {
  const active = new Set(await activeGuestUuids());
  const still = guests.filter((g) => active.has(g.uuid)).map((g) => g.name);
  if (still.length > 0) throw new Error(`after ${after}: still running: ${still.join(', ')}`);
}

// Throws unless each of these guests has a managed save image.
export async function expectManagedSave(guests: readonly BenchGuest[], after: string): Promise<void> {
  const without: string[] = [];
  await Promise.all(guests.map(async (g) => {
    const r = await runVirsh(['dominfo', `--domain=${g.uuid}`]);
    if (!/^Managed save:\s+yes/m.test(r.stdout)) without.push(g.name);
  }));
  if (without.length > 0) throw new Error(`after ${after}: no managed save image: ${without.join(', ')}`);
}

// Throws unless none of the three daemons runs.
export function expectDaemonsDown(bed: Pick<LibvirtBed, 'daemonsDown'>, after: string): void {
  if (!bed.daemonsDown()) throw new Error(`after ${after}: libvirt daemons still run`);
}

/** A poll of `virsh version` every `everyMs` from now until it answers. */
export interface AnswerPoll {
  /** performance.now() of the first answer. */
  answered: Promise<number>;
  stop(): void;
}

// Polls `virsh version` until libvirtd answers (or stop()).
export function pollForAnswer(everyMs: number): AnswerPoll {
  let stopped = false;
  const answered = (async () => {
    while (!stopped) {
      const r = await runVirsh(['version'], { timeoutMs: 10_000 });
      if (r.code === 0) return performance.now();
      await sleep(everyMs);
    }
    return Number.NaN;
  })();
  return { answered, stop: () => void (stopped = true) };
}

// After a failed round: daemons up (recorded as ours) and every guest off; never throws.
export async function recover(ctx: LibvirtContext): Promise<void> {
  try {
    if (ctx.bed.daemons().length < 3) {
      await startLibvirtDaemons();
      ctx.bed.adoptDaemons();
    }
    await ctx.bed.setRunning(0);
  } catch (err) {
    ctx.log(`recovery failed: ${(err as Error).message}`);
  }
}
