// The errors a run raises before or around its work; cli/exit-codes.ts maps them to exit codes.

/** Root is needed. */
export class NotRootError extends Error {
  constructor(message = 'rc.libvirt must run as root') {
    super(message);
    this.name = new.target.name;
  }
}

/** A program rc.libvirt needs is missing. */
export class NotInstalledError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The run lock could not be taken: another run holds it, or locking itself failed. */
export class RunLockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
