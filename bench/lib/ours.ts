// Our program as users run it: /etc/rc.d/rc.libvirt (the shim rc/rc.libvirt,
// which runs node with its options) handing over to the bundled
// dist/rc.libvirt, with its run, state and config paths moved into a temp
// folder so the bench leaves the host's journal and run lock alone.
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../../test/helpers/process.js';
import { repoRoot } from '../../test/helpers/testbed.js';
import { checkRun, timedRun, type TimedRun } from './timed.js';

// Options added to every run, for a look inside (e.g. RCL_BENCH_OURS_ARGS=-v: each virsh call is printed, and the JSON's traces show it with times); changes what is measured a little.
const EXTRA_ARGS = (process.env.RCL_BENCH_OURS_ARGS ?? '').split(/\s+/).filter(Boolean);

// The bundled program `npm run build` makes.
export const OUR_PROGRAM = join(repoRoot, 'dist', 'rc.libvirt');
// The rc script that runs it, as installed in /etc/rc.d/.
export const OUR_RC_SCRIPT = join(repoRoot, 'rc', 'rc.libvirt');
/** The environment that points the rc script at the built program and this node. */
export const RC_SCRIPT_ENV = { RC_LIBVIRT_BUNDLE: OUR_PROGRAM, RC_LIBVIRT_NODE: process.execPath };

/** Our program with private paths. */
export interface Ours {
  /** The settings environment every run gets (plus `extraEnv`). */
  env: NodeJS.ProcessEnv;
  dir: string;
  /** Runs `rc.libvirt ARGS` (with `-v` when `stamped`: every virsh call is printed, for spawn → first action); throws unless it exits 0 (unless `allowFailure`). */
  run(args: readonly string[], opts?: { extraEnv?: NodeJS.ProcessEnv; measureRss?: boolean; allowFailure?: boolean; stamped?: boolean }): Promise<TimedRun>;
  close(): Promise<void>;
}

// Checks the program is built.
export function requireOurProgram(): void {
  if (!existsSync(OUR_PROGRAM)) throw new Error(`${OUR_PROGRAM} is missing; run: npm run build`);
}

// Prepares private run/state/config paths for our program.
export async function prepareOurs(prefix = 'rcl-bench-ours-'): Promise<Ours> {
  requireOurProgram();
  const dir = await makeTempDir(prefix);
  await mkdir(join(dir, 'run'), { recursive: true });
  await mkdir(join(dir, 'state'), { recursive: true });
  const config = join(dir, 'libvirt.conf');
  await writeFile(config, '# rc-libvirt benchmarks: defaults only\n');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...RC_SCRIPT_ENV,
    RC_LIBVIRT_CONFIG: config,
    RC_LIBVIRT_RUN_DIR: join(dir, 'run'),
    RC_LIBVIRT_STATE_DIR: join(dir, 'state'),
  };
  return {
    env,
    dir,
    async run(args, opts = {}) {
      const verbose = opts.stamped && !EXTRA_ARGS.includes('-v') ? ['-v'] : [];
      const run = await timedRun([OUR_RC_SCRIPT, ...verbose, ...EXTRA_ARGS, ...args], {
        env: { ...env, ...opts.extraEnv },
        timeoutMs: 900_000,
        measureRss: opts.measureRss,
      });
      return opts.allowFailure ? run : checkRun(run, `rc.libvirt ${args.join(' ')}`);
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
