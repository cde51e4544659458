// The commands of cli-contract.md, described once: the help text, what each
// needs before it runs (root, programs, the run lock), and the body that runs it.
import type { CliOptions } from '../config/cli-options.js';
import type { ProgramName, RunContext, RunNeeds, RunOutcome } from '../rc/run-context.js';

/** A command's body: runs inside withRun() and returns how it went. */
export type CommandBody = (run: RunContext) => Promise<RunOutcome>;

/** One command of the interface. */
export interface CommandSpec {
  name: string;
  describe: string;
  /** What the command needs before it may run, from the options given. */
  needs: (options: CliOptions) => RunNeeds;
  load: () => Promise<CommandBody>;
}

const LIBVIRT_PROGRAMS: readonly ProgramName[] = ['virsh', 'libvirtd', 'virtlogd', 'virtlockd'];

// The daemon commands: DRIVER=qmp runs guests without libvirt (no daemons, no programs of libvirt's).
// A dry run changes nothing: it needs neither root nor the lock.
const daemonNeeds = (o: CliOptions): RunNeeds => ({
  root: !o.dryRun,
  programs: (s) => (s.driver === 'qmp' ? [] : LIBVIRT_PROGRAMS),
  lock: !o.dryRun,
});

// The guest commands: the drivers need no program found beforehand (virsh's absence is reported per connection).
const guestNeeds = (o: CliOptions): RunNeeds => ({ root: !o.dryRun, programs: [], lock: !o.dryRun });

// Reading commands: no root (as another user libvirtd may refuse to answer), no lock (they must answer while a stop runs).
const readNeeds = (): RunNeeds => ({ root: false, programs: [], lock: false });

// The commands that run at host shutdown: bad settings and missing programs never keep them from the guests.
const atShutdown = (needs: (o: CliOptions) => RunNeeds) => (o: CliOptions): RunNeeds => ({ ...needs(o), atShutdown: true });

const daemonCommand = (which: 'start' | 'stop' | 'restart' | 'soft_restart' | 'shutdown') => async (): Promise<CommandBody> => {
  const { daemonCommand: run } = await import('../rc/daemon-commands.js');
  return (r) => run(r, which);
};

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'start',
    describe: 'start virtlockd, virtlogd and libvirtd (not with --driver qmp), wait until libvirtd answers, bring back the guests the last stop handled',
    needs: daemonNeeds,
    load: daemonCommand('start'),
  },
  {
    name: 'stop',
    describe: 'bring every active guest down per its policy (ON_SHUTDOWN, default managedsave), concurrently, destroying at the timeout what still runs; then stop networks, the daemons and modules',
    needs: atShutdown(daemonNeeds),
    load: daemonCommand('stop'),
  },
  {
    name: 'restart',
    describe: 'stop, then start',
    needs: daemonNeeds,
    load: daemonCommand('restart'),
  },
  {
    name: 'soft_restart',
    describe: 'restart the daemons while the guests keep running',
    needs: daemonNeeds,
    load: daemonCommand('soft_restart'),
  },
  {
    name: 'shutdown',
    describe: 'like stop, but the guests are shut down (ACPI) instead of saved',
    needs: atShutdown(daemonNeeds),
    load: daemonCommand('shutdown'),
  },
  {
    name: 'status',
    describe: 'daemons, guests and guests waiting to be restored; exit 0 when libvirtd runs (with --driver qmp: when a guest runs), 3 when not',
    needs: readNeeds,
    load: async () => (await import('../rc/status.js')).statusCommand,
  },
  {
    name: 'guests_shutdown',
    describe: 'shut down all running guests concurrently (destroy at the timeout); daemons stay up',
    needs: atShutdown(guestNeeds),
    load: async () => (await import('../rc/guest-commands.js')).guestsShutdown,
  },
  {
    name: 'guests_reboot',
    describe: 'reboot all running guests concurrently and wait until each runs again',
    needs: guestNeeds,
    load: async () => (await import('../rc/guest-commands.js')).guestsReboot,
  },
  {
    name: 'plan',
    describe: 'print what stop would do to each guest and why, changing nothing',
    needs: readNeeds,
    load: async () => (await import('../rc/guest-commands.js')).plan,
  },
];
