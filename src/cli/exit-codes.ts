// LSB exit codes (cli-contract.md, "Exit codes").

/** The exit codes rc.libvirt uses. */
export const EXIT = Object.freeze({
  ok: 0,
  failure: 1,
  usage: 2,
  notRunning: 3,
  notRoot: 4,
  notInstalled: 5,
  badConfig: 6,
});

/** One of the values of EXIT. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
