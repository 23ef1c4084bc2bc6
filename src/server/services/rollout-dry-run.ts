// What a rollout would do now, wave by wave, without starting it: who is selected, who is left out and why.
import { analysePlan } from '../../engine/exposure.ts';
import type { Plan } from '../../engine/plan.ts';
import type { DeviceView } from '../../engine/rollout-state.ts';
import { matches, parseSelector } from '../../engine/selector.ts';
import { selectWaveDevices } from '../../engine/wave-selection.ts';
import type { Db } from '../db/database.ts';
import type { Channel } from '../db/rollouts.ts';
import { deviceViews } from './rollout-fleet.ts';

export interface DryRunWave {
  wave: string;
  selected: number;
  excluded: { held: number; pinned: number; busy: number; deferred: number; no_component: number };
}

export interface DryRun {
  dry_run: true;
  plan: string;
  component: string;
  fleet: number;
  runs_component: number;
  waves: DryRunWave[];
  problems: string[];
}

/** Pure: the dry run of a plan over a fleet view at `now`. */
export function planDryRun(plan: Plan, component: string, views: DeviceView[], now: number): DryRun {
  const taken = new Set<string>();
  const running = views.filter((v) => v.hasComponent !== false);
  const analysis = analysePlan(
    plan,
    running.map((v) => v.labels),
    {},
  );
  const waves = plan.waves.map((w): DryRunWave => {
    const sel = parseSelector(w.select);
    const { chosen, without } = selectWaveDevices(w, views, taken);
    const excluded = { held: 0, pinned: 0, busy: 0, deferred: 0, no_component: without.length };
    for (const v of views) {
      if (taken.has(v.id) || !matches(sel, v.labels) || v.hasComponent === false) continue;
      if (v.held) excluded.held++;
      else if (v.pinned) excluded.pinned++;
      else if (v.busy) excluded.busy++;
    }
    for (const d of chosen) {
      taken.add(d.id);
      if ((d.deferredUntil ?? 0) > now) excluded.deferred++; // selected, but offered only after the deferral
    }
    for (const d of without) taken.add(d.id);
    return { wave: w.name, selected: chosen.length, excluded };
  });
  return {
    dry_run: true,
    plan: plan.name,
    component,
    fleet: views.length,
    runs_component: running.length,
    waves,
    problems: analysis.problems,
  };
}

/** The dry run of a plan for a component's devices (of a channel, or all) as they are now. */
export async function dryRun(
  db: Db,
  plan: Plan,
  component: string,
  channel: Channel | null,
  now: number,
): Promise<DryRun> {
  const views = await deviceViews(db, { component, rolloutId: -1, channel });
  return planDryRun(plan, component, views, now);
}
