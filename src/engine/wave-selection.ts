// Which devices a wave takes: matching its selector, not yet in this rollout, free to take it; ordered by
// the wave's `order` selectors, then by id, and cut to the wave's size.
import { resolveAmount, type WaveSpec } from './plan.ts';
import type { DeviceView } from './rollout-state.ts';
import { matches, parseSelector } from './selector.ts';

/**
 * The wave's devices, in offer order, and the devices its selector matched that do not run the component (never
 * offered it; the rollout records them as skipped). `taken` holds the devices already in this rollout.
 */
export function selectWaveDevices(
  wave: WaveSpec,
  devices: readonly DeviceView[],
  taken: { has(id: string): boolean },
): { chosen: DeviceView[]; without: DeviceView[] } {
  const sel = parseSelector(wave.select);
  const order = wave.order.map(parseSelector);
  const without: DeviceView[] = [];
  const candidates = devices.filter((d) => {
    if (taken.has(d.id) || !matches(sel, d.labels)) return false;
    if (d.hasComponent === false) {
      without.push(d);
      return false;
    }
    return !d.held && !d.pinned && !d.busy;
  });
  // Rank once per device, not once per comparison: the sort is the step's hot spot on large fleets.
  const ranks = new Map<DeviceView, number>();
  if (order.length > 0)
    for (const d of candidates) {
      const i = order.findIndex((o) => matches(o, d.labels));
      ranks.set(d, i < 0 ? order.length : i);
    }
  const rank = (d: DeviceView) => ranks.get(d) ?? 0;
  candidates.sort((a, b) => rank(a) - rank(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const n = Math.min(candidates.length, resolveAmount(wave.size, candidates.length));
  candidates.length = n;
  return { chosen: candidates, without };
}
