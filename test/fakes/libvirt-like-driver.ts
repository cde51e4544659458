// A scripted driver that behaves like the libvirt driver (src/domain/libvirt/driver.ts)
// in each way the ladder, restore, reboot, plan and the guest steps depend on:
// - kind 'libvirt'; `ping` answers after `connection.pingMs` (`never`: hangs;
//   past its `timeoutMs` it is NotReachableError, as a killed `virsh version`),
//   or fails at once (`pingFails`: libvirtd down), and then the listing fails
//   at once too, with no call of it answered, as virsh cannot connect;
// - the listing can fail (`listFails`) or hang until its signal aborts (`listHangs`);
// - a save pauses the guest first (Suspended); a failed one resumes it again, as
//   the driver's putBack does after libvirt gives up (`putBackFails`: left paused,
//   only logged, the save's own error is thrown);
// - a save that completes and still fails (`saveAnswerLost`): virsh died after
//   libvirt finished (ProtocolError) or its connection dropped (NotReachableError);
// - abort (`domjobabort`) returns once the job is told; the save lets go
//   `abortMs` later; with no job it resolves (the driver swallows "no job");
// - destroy can fail (`destroyFails`); of a guest already off it resolves;
// - transient guests (`persistent: false`) are listed as such;
// - start and shutdown resolve with the state the guest is in right after
//   them (the real driver reads it in the call's own virsh process);
// - it can resume; `canResume: false` makes a driver without `resume`, which
//   the contract allows (no real driver is one today).
// Still different from the real driver: no virsh processes, no event stream
// that can die (waits are woken at once by every state change; `waitFails`
// stands for a daemon that stops answering), guests addressed by the id given
// (name by default) instead of UUID, no networks, no domain XML (policy and
// save blockers are given directly), no watchdog on long calls, and every
// call answers at once unless its script says otherwise.
import type { OpOptions } from '../../src/domain/types.js';
import { InterruptedError, NotReachableError } from '../../src/domain/errors.js';
import { sleep } from '../../src/util/deadline.js';
import { createScriptedDriver, type FakeDriver, type FakeDriverOptions, type FakeGuest } from './fake-driver.js';

export type { FakeCall, FakeConnection, FakeDriver, FakeGuest, FakeScript } from './fake-driver.js';

/** A libvirt-like fake driver: the scripted driver plus libvirt's ping. */
export interface LibvirtLikeDriver extends FakeDriver {
  readonly kind: 'libvirt';
  ping(opts: OpOptions & { timeoutMs?: number }): Promise<void>;
}

/** Build a libvirt-like fake over the given guests (id = name unless given; uri default `fake:///one`). */
export function libvirtLikeDriver(list: FakeGuest[], opts: FakeDriverOptions = {}): LibvirtLikeDriver {
  const d = createScriptedDriver('libvirt', list, opts) as LibvirtLikeDriver;
  const listGuests = d.listGuests.bind(d);
  d.listGuests = async (o) => {
    if (d.connection.pingFails !== undefined) {
      d.reads.listings++;
      throw new NotReachableError(d.connection.pingFails);
    }
    return listGuests(o);
  };
  d.ping = async (o) => {
    d.calls.push({ at: performance.now(), op: 'ping', name: '' });
    if (d.connection.pingFails !== undefined) throw new NotReachableError(d.connection.pingFails);
    const ms = d.connection.pingMs ?? 0;
    const limit = o.timeoutMs ?? 30_000;
    if (ms !== 'never' && ms < limit) {
      await sleep(ms, o.signal).catch(() => {
        throw new InterruptedError('virsh version: interrupted', { cause: o.signal.reason });
      });
      return;
    }
    await sleep(limit, o.signal).catch(() => {
      throw new InterruptedError('virsh version: interrupted', { cause: o.signal.reason });
    });
    throw new NotReachableError(`libvirt (${d.uri}) did not answer within ${limit / 1000} s: virsh version killed`);
  };
  return d;
}
