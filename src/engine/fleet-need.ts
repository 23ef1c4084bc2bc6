// Which devices a step is about to look at, so that a caller with a large fleet can load only those (a partial
// step, StepInput.partial). A guess that is too small costs a second step with the whole fleet (FleetNeeded),
// never a different result; so this only has to be right in the common case: a steady step in a running wave.
import type { AssignmentIndex } from './assignment-index.ts';
import type { Plan } from './plan.ts';
import type { RolloutState } from './rollout-state.ts';

/**
 * The ids of the devices a step of `rollout` most likely reads: queued devices (offers look at holds, deferrals
 * and windows), devices being reverted (observed reverts), and the current wave's offered devices where a
 * device's label can govern it (device windows, a per-label concurrency limit). Null when the step is likely to
 * start a wave (it reads the whole fleet then), or when there are more than `max`.
 */
export function fleetNeedIds(
  plan: Plan,
  rollout: RolloutState,
  index: AssignmentIndex,
  /** Past this many ids the caller reads the whole fleet anyway: null, without collecting the rest. */
  max = Number.POSITIVE_INFINITY,
): Set<string> | null {
  if (rollout.status === 'pending') return null;
  const ids = new Set<string>();
  const add = (from: Iterable<string>) => {
    for (const id of from) {
      ids.add(id);
      if (ids.size > max) return false;
    }
    return true;
  };
  for (const q of index.queued.values()) if (!add(q)) return null;
  if (!add(index.reverting)) return null;
  const wave = plan.waves[rollout.wave];
  if (wave && (plan.deviceWindows || wave.maxConcurrentPer))
    for (const g of index.offered.get(rollout.wave)?.values() ?? []) if (!add(g)) return null;
  return ids;
}
