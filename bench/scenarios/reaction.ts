// Reaction time of the libvirt driver, in process: from a lifecycle event's
// timestamp (printed by an independent `virsh event`, started by the bench)
// to the driver's waitForState resolving. Pause/resume pairs need no boot,
// so there are many samples; stops are fewer (each needs a restore).
import { createLibvirtDriver } from '../../src/domain/libvirt/driver.js';
import type { GuestState } from '../../src/domain/types.js';
import { sleep } from '../../test/helpers/process.js';
import { LIBVIRT_URI, virsh } from '../../test/helpers/virsh.js';
import { startEventWitness, type EventWitness } from '../lib/events.js';
import type { BenchGuest } from '../lib/libvirt-bed.js';
import type { ReactionResult } from '../lib/results.js';
import { summarize } from '../lib/stats.js';
import type { LibvirtContext } from './libvirt-context.js';

type Driver = ReturnType<typeof createLibvirtDriver>;

// One sample: wait for `state`, run `virsh ACTION`, and return ms from the event's timestamp to the wait's end.
async function sample(driver: Driver, witness: EventWitness, guest: BenchGuest, action: string, state: GuestState, event: string): Promise<number> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no ${state} within 60 s`)), 60_000);
  try {
    const waited = driver.waitForState(guest.uuid, [state], { signal: ac.signal }).then(() => Date.now());
    // Let the wait make its first state query and subscribe before the guest changes.
    await sleep(300);
    const t0 = Date.now();
    await virsh([action, `--domain=${guest.uuid}`]);
    const resolvedAt = await waited;
    const ev = await witness.waitFor((e) => e.name === guest.name && e.event === event && e.time >= t0 - 5, 10_000);
    return resolvedAt - ev.time;
  } finally {
    clearTimeout(timer);
  }
}

// Runs `pairs` pause/resume samples and `stops` stop samples on the first guest (libvirtd up); leaves it off.
export async function benchReaction(ctx: LibvirtContext, pairs: number, stops: number): Promise<ReactionResult> {
  const guest = ctx.bed.guests[0];
  if (!guest) throw new Error('reaction: no guest');
  await ctx.bed.setRunning(1);
  const witness = await startEventWitness();
  const driver = createLibvirtDriver({ uri: LIBVIRT_URI });
  const pauseResume: number[] = [];
  const stop: number[] = [];
  try {
    // Warm up: the driver's event stream starts on first use.
    await sample(driver, witness, guest, 'suspend', 'paused', 'Suspended');
    await sample(driver, witness, guest, 'resume', 'running', 'Resumed');
    const warm = { ...driver.waitStats };
    for (let i = 0; i < pairs; i++) {
      pauseResume.push(await sample(driver, witness, guest, 'suspend', 'paused', 'Suspended'));
      pauseResume.push(await sample(driver, witness, guest, 'resume', 'running', 'Resumed'));
    }
    for (let i = 0; i < stops; i++) {
      await ctx.bed.setRunning(1);
      await sleep(200);
      stop.push(await sample(driver, witness, guest, 'shutdown', 'shutoff', 'Stopped'));
    }
    const s = driver.waitStats;
    ctx.log(`reaction: pause/resume median ${summarize(pauseResume).median} ms, stop median ${summarize(stop).median} ms (waits by event ${s.byEvent - warm.byEvent}, by poll ${s.byPoll - warm.byPoll})`);
    return {
      driverPauseResumeMs: summarize(pauseResume),
      driverStopMs: summarize(stop),
      driverWaits: { byEvent: s.byEvent - warm.byEvent, byPoll: s.byPoll - warm.byPoll, immediate: s.immediate - warm.immediate },
    };
  } finally {
    await driver.close();
    await witness.close();
  }
}
