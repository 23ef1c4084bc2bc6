// Which devices a wave takes: matching its selector, not yet in this rollout, free to take it; ordered by
// the wave's `order` selectors, then by id, and cut to the wave's size.
import { resolveAmount, type WaveSpec } from './plan.ts';
import type { DeviceView } from './rollout-state.ts';
import { matches, parseSelector } from './selector.ts';

const byId = (a: DeviceView, b: DeviceView) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * The wave's devices, in offer order; the devices its selector matched that do not run the component (never
 * offered it; the rollout records them as skipped); and, given the rollout's `target`, those already running it
 * (an earlier rollout put them there: an offer would change nothing, and the device would never report).
 * `taken` holds the devices already in this rollout.
 */
export function selectWaveDevices(
  wave: WaveSpec,
  devices: readonly DeviceView[],
  taken: { has(id: string): boolean },
  target?: string,
): { chosen: DeviceView[]; without: DeviceView[]; already: DeviceView[] } {
  const sel = parseSelector(wave.select);
  const order = wave.order.map(parseSelector);
  const without: DeviceView[] = [];
  const already: DeviceView[] = [];
  // One bucket per `order` selector (the first it matches) and one for the rest: ranking once per device,
  // then sorting each bucket by id, which a fleet listed in id order already is (checked, then not sorted).
  const buckets: DeviceView[][] = Array.from({ length: order.length + 1 }, () => []);
  for (const d of devices) {
    if (!matches(sel, d.labels) || taken.has(d.id)) continue;
    if (d.hasComponent === false) {
      without.push(d);
      continue;
    }
    if (d.held || d.pinned || d.busy) continue;
    if (target !== undefined && d.version === target) {
      already.push(d);
      continue;
    }
    let i = 0;
    while (i < order.length && !matches(order[i], d.labels)) i++;
    buckets[i].push(d);
  }
  for (const b of buckets) if (!sortedById(b)) b.sort(byId);
  const candidates = buckets.length === 1 ? buckets[0] : buckets.flat();
  const n = Math.min(candidates.length, resolveAmount(wave.size, candidates.length));
  candidates.length = n;
  return { chosen: candidates, without, already };
}

function sortedById(list: readonly DeviceView[]): boolean {
  for (let i = 1; i < list.length; i++) if (list[i - 1].id > list[i].id) return false;
  return true;
}
