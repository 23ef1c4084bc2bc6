// Read model of the per-device visibility routes: assignments joined with the devices they name or the rollouts
// they belong to. Rows keep their column names; services/history.ts shapes them into answers.

import type { Plan } from '../../engine/plan.ts';
import type { AssignmentState, RolloutStatus } from '../../engine/rollout-state.ts';
import type { Db } from './database.ts';
import type { Json } from './json.ts';

/** Offset paging of a list. */
export interface Paging {
  limit: number;
  offset: number;
}

/** A device's place in a rollout, as both answers show it. */
const ASSIGNMENT_COLUMNS = [
  'assignments.wave',
  'assignments.state',
  'assignments.from_version',
  'assignments.offered_at',
  'assignments.reported_at',
  'assignments.reason',
] as const;

interface AssignmentPlace {
  wave: number;
  state: AssignmentState;
  from_version: string | null;
  offered_at: number | null;
  reported_at: number | null;
  reason: string | null;
}

/** One device of a rollout: its assignment and, when the device row exists, its name and retirement. */
export interface RolloutDeviceRow extends AssignmentPlace {
  device_id: string;
  name: string | null;
  retired_at: number | null;
}

/** One rollout a device was assigned to: its assignment and the rollout in a few words. */
export interface DeviceAssignmentRow extends AssignmentPlace {
  rollout_id: number;
  component: string;
  version: string;
  plan_name: string;
  plan: Json<Plan>;
  status: RolloutStatus;
}

/** A page of a rollout's devices (all, or those in `state`), by wave, then device name, then id. */
export async function rolloutDeviceRows(
  db: Db,
  rolloutId: number,
  state: AssignmentState | undefined,
  page: Paging,
): Promise<RolloutDeviceRow[]> {
  let q = db
    .selectFrom('assignments')
    .leftJoin('devices', 'devices.id', 'assignments.device_id')
    .select(['assignments.device_id', ...ASSIGNMENT_COLUMNS, 'devices.name', 'devices.retired_at'])
    .where('assignments.rollout_id', '=', rolloutId);
  if (state) q = q.where('assignments.state', '=', state);
  return q
    .orderBy('assignments.wave')
    .orderBy('devices.name')
    .orderBy('assignments.device_id')
    .limit(page.limit)
    .offset(page.offset)
    .execute();
}

/** A device's assignments with their rollouts (see the two reads below). */
const deviceAssignments = (db: Db, deviceId: string) =>
  db
    .selectFrom('assignments')
    .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
    .select([
      'assignments.rollout_id',
      ...ASSIGNMENT_COLUMNS,
      'rollouts.component',
      'rollouts.version',
      'rollouts.plan_name',
      'rollouts.plan',
      'rollouts.status',
    ])
    .where('assignments.device_id', '=', deviceId);

/** A device's assignments by rollouts of these components, most recently offered first. */
export async function deviceAssignmentsOf(
  db: Db,
  deviceId: string,
  components: string[],
): Promise<DeviceAssignmentRow[]> {
  if (components.length === 0) return [];
  return deviceAssignments(db, deviceId)
    .where('rollouts.component', 'in', components)
    .orderBy('assignments.offered_at', 'desc')
    .execute();
}

/** A device's assignments by its newest `limit` rollouts, newest first. */
export async function newestDeviceAssignments(
  db: Db,
  deviceId: string,
  limit: number,
): Promise<DeviceAssignmentRow[]> {
  return deviceAssignments(db, deviceId).orderBy('assignments.rollout_id', 'desc').limit(limit).execute();
}
