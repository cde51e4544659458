// The config layer's error.

/** A bad settings file, environment variable or option value; the message names where. */
export class ConfigError extends Error {
  constructor(message: string, readonly where?: { file?: string; line?: number; key?: string }) {
    super(message);
    this.name = new.target.name;
  }
}
