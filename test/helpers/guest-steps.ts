// Runs rc.libvirt's guest steps in-process against real drivers, limited to
// the guests a test made (so a test never touches anyone else's guests), and
// records what the user would have seen.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { DEFAULTS, type Settings } from '../../src/config/settings.js';
import { createLibvirtDriver } from '../../src/domain/libvirt/driver.js';
import { createLibvirtRescueDriver } from '../../src/domain/libvirt/rescue-driver.js';
import type { DomainDriver } from '../../src/domain/types.js';
import type { GuestStepContext, GuestStepDeps } from '../../src/rc/guest-steps.js';
import { createMemoryLog } from '../../src/util/log.js';

/** A driver that lists only the guests whose id or name is in `keep`. */
export function onlyGuests(driver: DomainDriver, keep: () => ReadonlySet<string>): DomainDriver {
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'listGuests') {
        return async (o: { signal: AbortSignal }) => (await target.listGuests(o)).filter((g) => keep().has(g.id) || keep().has(g.name));
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** A guest-step context with a memory log and captured output. */
export interface StepRun {
  ctx: GuestStepContext;
  log: ReturnType<typeof createMemoryLog>;
  output: () => string;
  /** The log's info lines, in order (one per event: `NAME: save`, `NAME: saved (1.2 s)`...). */
  events: () => string[];
}

/** A context for one step; `signal` to interrupt it. */
export function stepContext(settings: Settings, opts: { signal?: AbortSignal; dryRun?: boolean } = {}): StepRun {
  const log = createMemoryLog();
  let out = '';
  const stdout = new PassThrough();
  stdout.on('data', (b: Buffer) => (out += b.toString()));
  return {
    ctx: { settings, log, signal: opts.signal ?? new AbortController().signal, dryRun: opts.dryRun ?? false, stdout },
    log,
    output: () => out,
    events: () => log.lines.filter((l) => l.level === 'info').map((l) => l.msg),
  };
}

/** Settings for a test: defaults with a private state directory. */
export async function testSettings(over: Partial<Settings>): Promise<Settings> {
  const stateDir = await mkdtemp(join(tmpdir(), 'rcl-state-'));
  return { ...DEFAULTS, stateDir, ...over };
}

/** Deps that open the given drivers. */
export function withDrivers(drivers: () => DomainDriver[]): GuestStepDeps {
  return { openDrivers: async () => drivers() };
}

/** Deps for a stop on libvirt `uri` that sees only the guests in `ours`, through libvirt and, if it comes to that, the rescue driver; every driver made lands in `made` (to close). */
export function ourLibvirtGuests(uri: string, ours: ReadonlySet<string>, log: StepRun['log'], made: DomainDriver[]): GuestStepDeps {
  const keep = (d: DomainDriver): DomainDriver => {
    const only = onlyGuests(d, () => ours);
    made.push(only);
    return only;
  };
  return {
    openDrivers: async () => [keep(createLibvirtDriver({ uri, log }))],
    createRescueDriver: (u, l) => keep(createLibvirtRescueDriver({ uri: u, log: l })),
  };
}
