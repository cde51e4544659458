// The package version, filled in from package.json.
import pkg from '../package.json' with { type: 'json' };

/** rc-libvirt's version. */
export const VERSION: string = pkg.version;
