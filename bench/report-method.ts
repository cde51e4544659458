// The "Method" section of docs/benchmarks.md: how each number is measured.

/** Markdown explaining what every table measures. */
export const METHOD = `## Method

All of it runs from \`bench/\` (\`npm run bench\`; \`npm run bench:quick\` for one
round with two guests; \`--only=help,qmp,libvirt,scale\` for some parts;
\`RCL_BENCH_GUESTS\`, \`RCL_BENCH_REPS\`, \`RCL_BENCH_SCALE\`,
\`RCL_BENCH_SCALE_COMPARE\` and \`RCL_BENCH_SCALE_REPS\` change the counts, see
\`bench/config.ts\`), as root, on a machine set up by \`node testbed/setup.mjs\`.
A full run takes about 15–20 minutes.
The libvirt part holds the test bed's host-wide libvirtd lock for its whole
duration; every guest, daemon and temp file it starts is removed by PID at the
end. Others share this 2-core machine, so the floor is measured in the same
rounds as ours and ratios matter more than absolute times.

**Guests.** The test guest (busybox initramfs, TCG, 256 MiB, 150 MiB of random
data written to a tmpfs). The largest N are booted once (four at a time;
on a starved host a TCG kernel can panic at boot, and such a guest is booted
again) and saved with
\`virsh save\` to reference images; every round starts from those images
(\`virsh restore\`), so all rounds see the same filled, ready guests without a
fresh boot each time.

*Ours* is always run as users run it: the rc script \`rc/rc.libvirt\` (the
file installed as \`/etc/rc.d/rc.libvirt\`, which starts node with its
options) running the bundled \`dist/rc.libvirt\`.

**stop.** Five rounds per N, on the same running guests; the floor, ours and
libvirt-guests.sh each run in every round, in an order that rotates every round
(floor, ours, libvirt-guests.sh; then ours, libvirt-guests.sh, floor; ...), so
none always runs first or always follows another:
- *floor*: every \`virsh managedsave --domain=UUID\` started at once, timed until
  the last returns (*saves*); then SIGTERM to libvirtd, virtlogd and virtlockd
  at once, timed until all three have exited (*daemons*, polled every 10 ms).
  Then the *start floor*: the three daemons started at once (\`-d\`, rc.libvirt's
  default options), \`virsh version\` every 20 ms until it answers, then every
  \`virsh start\` (a restore) at once, until the last returns.
- *ours*: \`rc.libvirt -v stop\` with the daemons the previous start left
  running, wall time of the process; then \`rc.libvirt -v start\`, wall time
  (it returns once every restored guest runs), and a separate \`virsh version\`
  poll every 50 ms for when libvirtd first answers.
- *libvirt-guests.sh*: Debian's \`/usr/lib/libvirt/libvirt-guests.sh stop\` with
  \`ON_SHUTDOWN=suspend\` (it saves one guest after the other, checking each
  save once a second), then \`start\` with \`ON_BOOT=start\` (one \`virsh start\`
  after the other). It reads its settings by sourcing
  \`/etc/default/libvirt-guests\` after setting its defaults, so the environment
  cannot set them; the bench runs a copy whose only change is \`sysconfdir\` and
  \`localstatedir\` pointing into a temp folder holding the settings file, so
  the host's /etc and /var are not touched. It leaves the daemons running,
  so it does less than \`stop\`; the comparison is still in its favour.
- *original (model)*: the original rc.libvirt cannot run here (it is a Slackware
  script), so its waiting is modelled from the same round's floor save time
  *S*: saves start at once, \`sleep 2\`, then \`virsh list\` once a second until no
  guest is left, i.e. *W* = 2 s + ⌈max(0, *S* − 2 s)⌉ whole seconds; then
  \`kill\` libvirtd + \`sleep 3\`, virtlogd + \`sleep 1\`, virtlockd + \`sleep 1\`:
  *W* + 5 s. The model leaves out the cost of the \`virsh list\` calls and of
  the daemons' exits (the script never waits for them), so it flatters the
  original.

**guests_shutdown.** Five rounds per N, each run from the reference images, the
floor, ours and libvirt-guests.sh in the rotating order of stop: *floor*: every
\`virsh shutdown\` at once, done at the timestamp of the last guest's *Stopped*
lifecycle event (an independent \`virsh event --loop --event lifecycle
--timestamp\` started by the bench); *ours*: \`rc.libvirt -v guests_shutdown\`,
wall time; libvirt-guests.sh \`stop\` with \`ON_SHUTDOWN=shutdown
PARALLEL_SHUTDOWN=N\` (for N=1 its one-by-one path; both poll once a second).
Original (model): 2 s + ⌈max(0, floor − 2 s)⌉.

**Spawn → first guest action.** Ours runs with \`-v\` in every round of stop,
start and guests_shutdown: it then prints \`run: virsh … managedsave|shutdown|start
…\` just before it spawns each such call. The bench stamps every line of ours
when it arrives through the pipe (wall clock); the sample is that stamp of the
first such line minus the moment the bench spawned the rc script (a run
without \`-v\` would fall back to its first per-guest progress line). \`-v\` adds a line per
virsh call to the output, nothing else. For \`start\`, the time includes
starting the daemons; the second row counts from the \`libvirtd answers\` line.

**libvirt at scale.** The bench's own libvirtd (under the same lock), with
guests of 32 MiB that sit in their firmware: TCG, no disk, kernel or network,
\`<bios rebootTimeout='-1'/>\` (SeaBIOS finds nothing to boot and waits there),
defined and started 16 at a time, growing to each N in turn (N = 1, 8, 64: only
those N guests are defined). *Listing*: one \`rc.libvirt plan --json\` with
\`VIRSH\` set to a wrapper script that appends its arguments to a log and
runs the real virsh: the virsh processes it spawned, by command (the first
word after virsh's global options); then five runs without the wrapper, wall
time. *stop / start* (at 8 and at the largest N): three rounds, ours and the floor in
turn (rotating who goes first): ours is \`rc.libvirt stop\` then \`start\` (no
\`-v\`; \`TIMEOUT=120\`, so a failed save costs 2 minutes rather than 5: a
firmware guest ignores its power button), each under \`/usr/bin/time -f %M\` for its peak RSS; the floor is
that of the stop/start scenario (every \`managedsave\` at once, then the
daemons' exit; the daemons at once, then every \`virsh start\` at once).

**Reaction.** The same independent \`virsh event\` stream gives each event's
timestamp. *Driver*: in process (\`createLibvirtDriver\`), a
\`waitForState\` is waiting when the bench runs \`virsh suspend\`/\`resume\` or
\`virsh shutdown\`; the sample is the time from the event's timestamp to the
wait resolving. A *Stopped* event ends the wait at once; other events wake
the wait, which then asks \`virsh domstate\` (one process spawn). *Command
line*: each guest's result line of \`rc.libvirt guests_shutdown\`, stamped when
it reached the bench through the pipe, minus that guest's *Stopped* timestamp.
Our driver's own \`virsh event\` gets the same event from libvirtd at the same
moment as the witness, so a sample can be 0 (or a few ms below): the reaction
is then below what this can resolve.

**qmp scale.** N definitions \`{"argv": ["qemu-system-x86_64", "-machine",
"none", "-nodefaults", "-display", "none", "-m", "16"], "autostart": true}\` in a
private \`QEMU_GUESTS_DIR\`. Each round starts them afresh (nothing saved, no
journal) with \`rc.libvirt --driver qmp start\` and saves them with \`stop\`:
wall time and peak RSS (\`/usr/bin/time -f %M\`, package \`time\`). Then one
\`start\` restores what the last stop saved (its time, and how many guests it
failed to restore). Such guests have no ACPI (they would be "stubborn" for a
shutdown), but saving works.

**PARALLEL.** \`rc.libvirt stop --parallel P\` of the largest N filled guests
for each P (0 = all at once; one round in a full run, to leave time for the
five rounds above), each followed by \`rc.libvirt start\`.

**--help.** \`rc.libvirt --help\` spawned one after another (after one
warm-up), median wall time; \`node -e ''\` the same way for comparison.
`;
