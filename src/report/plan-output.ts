// The plan for people (a table, the save directories, unreachable
// connections) and for scripts (`--json`).
import type { StopPlan } from '../guests/plan.js';
import { mib } from '../util/units.js';
import { guestLabel } from './guest-progress.js';
import { formatTable } from './summary.js';

/** The plan as a table with the save directories under it. */
export function formatPlan(plan: StopPlan, showUri = false): string {
  const out: string[] = [];
  const sorted = [...plan.guests].sort((a, b) => b.order - a.order || a.guest.name.localeCompare(b.guest.name));
  // No guest found is not "no guest" when a connection did not answer.
  if (sorted.length === 0) out.push(plan.unreachable.length > 0 ? 'no active guests on the connections that answered' : 'no active guests');
  else {
    out.push(formatTable(
      ['ORDER', 'GUEST', 'STATE', 'MEMORY', 'ACTION', 'TIMEOUT', 'WHY'],
      sorted.map((p) => [
        String(p.order),
        guestLabel(p.guest, showUri),
        p.guest.state,
        mib(p.guest.memoryKiB * 1024),
        p.resumeFirst ? `resume+${p.action}` : p.action,
        `${p.timeout} s`,
        p.reasons.join('; ') || (p.action === 'save' ? 'fits' : ''),
      ]),
    ));
  }
  for (const s of plan.space) {
    out.push(s.freeBytes === undefined
      ? `save directory ${s.directory}: free space unknown (${s.error ?? 'not measured'})`
      : `save directory ${s.directory}: ${mib(s.freeBytes)} free, ${mib(s.plannedBytes)} planned, ${mib(s.marginBytes)} kept free`);
  }
  for (const u of plan.unreachable) out.push(`connection ${u.uri}: not reachable (${u.error})`);
  for (const w of plan.warnings ?? []) out.push(`warning: ${w}`);
  const groups = [...new Set(sorted.map((p) => p.order))];
  if (sorted.length > 0) {
    out.push(`at stop: ${groups.length > 1 ? `order groups ${groups.join(', ')} one after another; ` : ''}a guest still active at its timeout is destroyed (a running save is aborted first)`);
  }
  return out.join('\n');
}

/** The plan as JSON for scripts. */
export function planToJson(plan: StopPlan): object {
  return {
    mode: plan.mode,
    guests: plan.guests.map((p) => ({
      uri: p.guest.uri,
      id: p.guest.id,
      name: p.guest.name,
      state: p.guest.state,
      memoryKiB: p.guest.memoryKiB,
      requested: p.requested,
      action: p.action,
      resumeFirst: p.resumeFirst,
      timeout: p.timeout,
      order: p.order,
      saveBlockers: p.guest.saveBlockers,
      persistent: p.guest.persistent,
      saveDirectory: p.saveDirectory ?? null,
      reasons: p.reasons,
      // What the listing could not learn in time (missing facts and why), or null.
      undescribed: p.guest.undescribed ?? null,
    })),
    space: plan.space,
    unreachable: plan.unreachable,
    warnings: plan.warnings ?? [],
  };
}
