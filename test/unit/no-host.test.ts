// The guard of no-host.setup.ts holds the code under test too: the program's
// own process runner cannot start the host's virsh, and no pid the test did not
// start can be signalled. (Were the guard gone, both calls would be harmless:
// virsh on libvirt's built-in test driver, and signal 0 to init.)
import { describe, expect, it } from 'vitest';
import { runProcess } from '../../src/util/run.js';

describe('unit tests are kept off the host', () => {
  it("the program's runner cannot start the host's virsh", async () => {
    const r = await Promise.resolve()
      .then(() => runProcess(['virsh', '-c', 'test:///default', 'version'], { timeoutMs: 10_000 }))
      .then((run) => run.spawnError?.message ?? `ran: exit ${run.exitCode}`, (err: unknown) => (err as Error).message);
    expect(r).toMatch(/must not run the host's .*virsh/);
  });

  it('a pid the test did not start cannot be signalled', () => {
    expect(() => process.kill(1, 0)).toThrow(/must not signal pid 1/);
  });
});
