// `rc.libvirt --help` wall time: repeated spawns of the rc script (which runs the bundled program), against `node -e ''` (the floor of any Node program).
import { OUR_RC_SCRIPT, RC_SCRIPT_ENV, requireOurProgram } from '../lib/ours.js';
import { summarize, type Summary } from '../lib/stats.js';
import { checkRun, timedRun } from '../lib/timed.js';

// Spawns `argv` `count` times one after another (after one warm-up) and returns the wall times.
async function spawnTimes(argv: string[], count: number, env?: NodeJS.ProcessEnv): Promise<number[]> {
  checkRun(await timedRun(argv, { env }), argv.join(' '));
  const times: number[] = [];
  for (let i = 0; i < count; i++) times.push(checkRun(await timedRun(argv, { env }), argv.join(' ')).ms);
  return times;
}

// Median wall time of `rc.libvirt --help` and of `node -e ''`.
export async function benchHelp(count: number): Promise<{ helpMs: Summary; nodeStartMs: Summary }> {
  requireOurProgram();
  const helpMs = summarize(await spawnTimes([OUR_RC_SCRIPT, '--help'], count, { ...process.env, ...RC_SCRIPT_ENV }));
  const nodeStartMs = summarize(await spawnTimes([process.execPath, '-e', ''], count));
  return { helpMs, nodeStartMs };
}
