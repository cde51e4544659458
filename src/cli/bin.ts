// The executable's entry: run main() and exit with its code once output is flushed.
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`rc.libvirt: internal error: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
