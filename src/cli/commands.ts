// The commands of cli-contract.md, described once: the help text and the module that runs each.
import type { CommandContext } from './context.js';

/** A command's entry point: returns the exit code. */
export type CommandRunner = (ctx: CommandContext) => Promise<number>;

/** One command of the interface. */
export interface CommandSpec {
  name: string;
  describe: string;
  load: () => Promise<CommandRunner>;
}

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'start',
    describe: 'start virtlockd, virtlogd and libvirtd (not with --driver qmp), wait until libvirtd answers, bring back the guests the last stop handled',
    load: async () => (await import('./commands/start.js')).run,
  },
  {
    name: 'stop',
    describe: 'bring every active guest down per its policy (ON_SHUTDOWN, default managedsave), concurrently, destroying at the timeout what still runs; then stop networks, the daemons and modules',
    load: async () => (await import('./commands/stop.js')).run,
  },
  {
    name: 'restart',
    describe: 'stop, then start',
    load: async () => (await import('./commands/restart.js')).run,
  },
  {
    name: 'soft_restart',
    describe: 'restart the daemons while the guests keep running',
    load: async () => (await import('./commands/soft-restart.js')).run,
  },
  {
    name: 'shutdown',
    describe: 'like stop, but the guests are shut down (ACPI) instead of saved',
    load: async () => (await import('./commands/shutdown.js')).run,
  },
  {
    name: 'status',
    describe: 'daemons, guests and guests waiting to be restored; exit 0 when libvirtd runs (with --driver qmp: when a guest runs), 3 when not',
    load: async () => (await import('./commands/status.js')).run,
  },
  {
    name: 'guests_shutdown',
    describe: 'shut down all running guests concurrently (destroy at the timeout); daemons stay up',
    load: async () => (await import('./commands/guests-shutdown.js')).run,
  },
  {
    name: 'guests_reboot',
    describe: 'reboot all running guests concurrently and wait until each runs again',
    load: async () => (await import('./commands/guests-reboot.js')).run,
  },
  {
    name: 'plan',
    describe: 'print what stop would do to each guest and why, changing nothing',
    load: async () => (await import('./commands/plan.js')).run,
  },
];
