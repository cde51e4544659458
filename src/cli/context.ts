// What a command gets from the command line.

/** Options as given on the command line (strings: the config layer validates them). */
export interface CliOptions {
  config?: string;
  timeout?: string;
  parallel?: string;
  onShutdown?: string;
  onBoot?: string;
  startDelay?: string;
  driver?: string;
  uri?: string[];
  guestsDir?: string;
  dryRun: boolean;
  json: boolean;
  /** -1 quiet, 0 normal, 1+ verbose */
  verbosity: number;
}

/** Everything a command runs with. */
export interface CommandContext {
  command: string;
  options: CliOptions;
  env: NodeJS.ProcessEnv;
  /** Aborts when the run is asked to stop (SIGINT/SIGTERM): no new work starts. */
  signal: AbortSignal;
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
}
