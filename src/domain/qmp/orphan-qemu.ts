// A QEMU that runs from our runtime directory although its definition is
// broken (no longer validates) or gone. Its rule: it is still found at stop,
// by its pidfile (the process's identity checked through /proc) and its QMP
// socket, and handled with the safe ladder: never saved (the argv a restore
// would need is not known), shut down cleanly through QMP, destroyed only at
// its deadline. Its `problem` and save blocker name the definition, so the
// plan and the summary say why and the run exits non-zero.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Log } from '../../util/log.js';
import type { GuestFiles } from './driver-context.js';
import { withFsDeadline } from './fs-deadline.js';
import { checkGuestName } from './guest-definition.js';
import { checkProcess, runtimePaths } from './qemu-process.js';
import { savedImagePaths } from './saved-image.js';

/** The directories an orphan is looked for in. */
export interface OrphanDirs {
  guestsDir: string;
  runDir: string;
  saveDir: string;
  log?: Log | undefined;
}

/** The files of guest `id` whose QEMU runs but whose definition is broken or gone (`problem` says how). */
export function orphanGuestFiles(dirs: OrphanDirs, id: string, problem: string): GuestFiles {
  return {
    def: {
      name: id,
      file: join(dirs.guestsDir, `${id}.json`),
      argv: [],
      autostart: false,
      // No policy of its own: the save blocker makes the plan shut it down, and its reason names the definition.
      policy: {},
      memoryKiB: 0,
      saveBlockers: [`its definition is broken or gone (${problem}): it can only be shut down`],
    },
    run: runtimePaths(dirs.runDir, id),
    saved: savedImagePaths(dirs.saveDir, id),
    problem: `its definition is broken or gone: ${problem}`,
  };
}

/** Whether guest `id`'s QEMU runs from `runDir` (its pidfile names a live process with our QMP socket). */
export async function runsFromRunDir(runDir: string, id: string): Promise<boolean> {
  const p = await checkProcess(runtimePaths(runDir, id)).catch(() => undefined);
  return p?.alive === true;
}

/** QEMUs running from the runtime directory whose definition is not among `valid`; `broken` holds the errors of invalid definitions. */
export async function findOrphanQemus(dirs: OrphanDirs, valid: ReadonlySet<string>, broken: ReadonlyMap<string, string>, fsCallMs: number): Promise<GuestFiles[]> {
  const names = (await withFsDeadline(readdir(dirs.runDir), `reading ${dirs.runDir}`, fsCallMs))
    .filter((f) => f.endsWith('.pid'))
    .map((f) => f.slice(0, -'.pid'.length))
    .filter((n) => !valid.has(n) && checkGuestName(n) === undefined);
  const out: GuestFiles[] = [];
  for (const name of names) {
    if (!(await runsFromRunDir(dirs.runDir, name))) continue;
    const problem = broken.get(name) ?? `no ${join(dirs.guestsDir, `${name}.json`)}`;
    dirs.log?.error(`${name}: QEMU runs from ${dirs.runDir}, but ${problem}; it is shut down, not saved`);
    out.push(orphanGuestFiles(dirs, name, problem));
  }
  return out;
}
