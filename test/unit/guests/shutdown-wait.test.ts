// The shutdown request and the wait after it: the state the request read
// along with it (the libvirt driver's) stands for the first wait's query only.
import { describe, expect, it } from 'vitest';
import { NotReachableError } from '../../../src/domain/errors.js';
import type { DomainDriver, GuestState, WaitOptions } from '../../../src/domain/types.js';
import { shutdownUntilOff } from '../../../src/guests/shutdown-wait.js';

// Just the two calls shutdownUntilOff makes: a request that answers `after`, and waits that fail `failFirst` times, then see the guest off.
function requestAndWaits(after: GuestState | undefined, failFirst: number) {
  const waits: (GuestState | undefined)[] = [];
  const driver = {
    shutdown: async () => after,
    waitForState: async (_id: string, _states: readonly GuestState[], o: WaitOptions) => {
      waits.push(o.stateNow);
      if (waits.length <= failFirst) throw new NotReachableError('libvirtd does not answer');
      return 'shutoff';
    },
  } as unknown as DomainDriver;
  return { driver, waits };
}
const notes = { failed: () => undefined, repeated: () => undefined };

describe('shutdownUntilOff', () => {
  it('gives the first wait the state the request read; a wait asked again after a failure gets none', async () => {
    const { driver, waits } = requestAndWaits('running', 1);
    expect(await shutdownUntilOff(driver, 'g', AbortSignal.timeout(10_000), notes)).toBe('off');
    expect(waits).toEqual(['running', undefined]);
  });

  it('a request that read no state leaves the wait to ask', async () => {
    const { driver, waits } = requestAndWaits(undefined, 0);
    expect(await shutdownUntilOff(driver, 'g', AbortSignal.timeout(10_000), notes)).toBe('off');
    expect(waits).toEqual([undefined]);
  });
});
