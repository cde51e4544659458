// Child calls end at their deadline, also when a grandchild keeps their pipes:
// a real QEMU launched with `-daemonize` whose second serial port writes to
// the stderr it was started with, so the daemonized QEMU keeps the launching
// call's stderr open for its whole life. (QEMU 7.2 with `-D logfile` puts the
// log file itself on its stderr when it daemonizes, and `-D /dev/stderr`
// cannot reopen the socket Node gives a child as stderr: the definition hands
// QEMU that stderr as an fd set, `-add-fd` then `-chardev pipe,path=/dev/fdset/N`,
// through a one-line sh that only adds the fd and execs QEMU.)
// `rc.libvirt start` with the qmp driver launches it through the installed
// script; the launch call ends at QEMU's exit, not when the pipe closes, so
// the run ends and the guest runs.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForGuestReady } from '../helpers/console.js';
import { makeQmpBed, type QmpBed } from '../helpers/qmp-guests.js';
import { RC_BUNDLE, RC_SCRIPT } from '../helpers/rc-libvirt-harness.js';
import { runRc } from '../helpers/rc-cli.js';
import { requireTestbed } from '../helpers/testbed.js';

const NAME = 'rcl fproc';

describe('a daemonized QEMU that keeps the launching call\'s stderr', () => {
  let bed: QmpBed;
  beforeAll(async () => {
    requireTestbed();
    bed = await makeQmpBed('rcl-fproc-', [{ name: NAME, memMiB: 128 }]);
    const file = join(bed.guestsDir, `${NAME}.json`);
    const def = JSON.parse(readFileSync(file, 'utf8')) as { argv: string[]; autostart: boolean };
    const [qemu, ...args] = def.argv;
    def.argv = ['/bin/sh', '-c', 'exec 3>&2; exec "$0" "$@" -add-fd fd=3,set=9 -chardev pipe,id=errlog,path=/dev/fdset/9 -serial chardev:errlog', qemu!, ...args];
    def.autostart = true;
    writeFileSync(file, JSON.stringify(def));
  });
  afterAll(async () => {
    await bed?.cleanup();
  });

  it('start (qmp, autostart) ends with exit 0 and the guest runs and boots', async () => {
    // The run is killed after 60 s: a launch call waiting for the pipe to close would hang until then.
    const r = await runRc(['start'], bed.env({ RC_LIBVIRT_BUNDLE: RC_BUNDLE }), { program: RC_SCRIPT, timeoutMs: 60_000 });
    expect(r.signal, r.stdout + r.stderr).toBeNull();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^'${NAME}' +start +started`, 'm'));
    const pid = Number(readFileSync(join(bed.qmpRunDir, `${NAME}.pid`), 'utf8').trim());
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain('-daemonize');
    expect(argv).toContain('chardev:errlog');
    await waitForGuestReady(bed.consoleOf(NAME), { timeoutMs: 150_000 });
  }, 300_000);
});
