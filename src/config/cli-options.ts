// The options of the command line, as given (the config layer validates them).

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
