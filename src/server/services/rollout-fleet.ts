// The fleet as one rollout's engine sees it: devices, what they run, who holds them, who is busy elsewhere.
import { ACTIVE, type DeviceView } from '../../engine/rollout-state.ts';
import type { Labels } from '../../engine/selector.ts';
import type { ComponentState } from '../../protocol/component-state.ts';
import { busyDevices } from '../db/assignments.ts';
import type { Db } from '../db/database.ts';
import { componentStatesOf } from '../db/device-components.ts';
import { liveLabelSets, stepDevicesOfChannel } from '../db/devices.ts';
import type { Channel } from '../db/rollouts.ts';

/** States a device reports for a component when its own local controls keep it where it is. */
const LOCALLY_HELD: ReadonlySet<ComponentState> = new Set(['held', 'pinned']);
/** Component states with no transaction open on the device. */
const SETTLED: ReadonlySet<ComponentState> = new Set(['idle', 'held', 'pinned']);

/** Which rollout is looking (busy = owned by another one) and at which channel's devices (null = all). */
export interface FleetScope {
  component: string;
  rolloutId: number; // -1: no rollout yet (dry run, plan checks)
  channel: Channel | null;
}

/**
 * Devices as one rollout's engine sees them, for a component: every device, or those of `ids` (a partial step;
 * an id that is not a live device of the scope is left out). A rollout scoped to a channel sees only that
 * channel's devices. Operator holds and the device's own hold or pin both count as held.
 */
export async function deviceViews(db: Db, scope: FleetScope, ids?: readonly string[]): Promise<DeviceView[]> {
  const [devices, comps, busy] = await Promise.all([
    stepDevicesOfChannel(db, scope.channel, ids),
    componentStatesOf(db, scope.component, ids),
    busyDevices(db, scope.component, scope.rolloutId, ACTIVE, ids),
  ]);
  // One map over the component rows (a step reads the whole fleet: at 1 M devices every pass counts).
  const comp = new Map<string, (typeof comps)[number]>();
  for (const c of comps) comp.set(c.deviceId, c);
  return devices.map((d): DeviceView => {
    const c = comp.get(d.id);
    return {
      id: d.id,
      labels: d.labels,
      held: d.held || (c !== undefined && LOCALLY_HELD.has(c.state)),
      pinned: Object.hasOwn(d.pins, scope.component),
      busy: busy.has(d.id),
      version: c?.version ?? null,
      deferredUntil: d.deferredUntil,
      settled: c !== undefined && SETTLED.has(c.state),
      seenAt: d.lastSeenAt,
      hasComponent: c !== undefined,
    };
  });
}

/**
 * The labels of the live fleet a plan is measured against (retired devices excluded): for a rollout, the devices
 * of its channel that run its component (the only ones it can offer); for a plan alone (`null`), every device.
 */
export function liveFleetLabels(
  db: Db,
  target: { component: string; channel: Channel | null } | null,
): Promise<Labels[]> {
  return liveLabelSets(db, target);
}
