// Table `assignments`: per rollout and device, the wave, the state and the device's own outcome. Every query of
// the table lives here.
import type { Generated, Selectable } from 'kysely';
import type {
  Assignment,
  AssignmentState,
  DeviceOutcome,
  RolloutStatus,
} from '../../engine/rollout-state.ts';
import type { FailureClass } from '../../protocol/failure-class.ts';
import type { Db } from './database.ts';
import { inChunks } from './in-chunks.ts';
import { insertShaped } from './shaped.ts';

export interface AssignmentTable {
  rollout_id: number;
  device_id: string;
  wave: number;
  state: AssignmentState;
  outcome: DeviceOutcome | null; // the device's own verdict, kept through reverts
  from_version: string | null;
  offered_at: number | null;
  reported_at: number | null;
  reason: string | null;
  failure_class: FailureClass | null; // why it failed, as a class: decides whether `retry` offers it again
  rev: Generated<number>; // the rollout's assignment revision that last wrote the row (rollouts.asg_rev)
}

export type AssignmentRow = Selectable<AssignmentTable>;

/** Assignment states in which a device still belongs to its rollout (another rollout must leave it alone). */
export const OWNING: ReadonlySet<AssignmentState> = new Set([
  'queued',
  'offered',
  'succeeded',
  'failed',
  'reverting',
]);

// Rows per statement: 10 columns each, under SQLite's (32,766) and PostgreSQL's (65,535) parameter limits.
const CHUNK = 1000;

/** Maps a row to the engine's `Assignment`. */
export function toAssignment(r: Omit<AssignmentRow, 'rev'>): Assignment {
  return {
    deviceId: r.device_id,
    wave: r.wave,
    state: r.state,
    outcome: r.outcome,
    fromVersion: r.from_version,
    offeredAt: r.offered_at,
    reportedAt: r.reported_at,
    reason: r.reason,
    failureClass: r.failure_class,
  };
}

/** Maps an engine `Assignment` to its row, written at revision `rev`. */
export function fromAssignment(rolloutId: number, a: Assignment, rev: number): AssignmentRow {
  return {
    rev,
    rollout_id: rolloutId,
    device_id: a.deviceId,
    wave: a.wave,
    state: a.state,
    outcome: a.outcome ?? null,
    from_version: a.fromVersion,
    offered_at: a.offeredAt,
    reported_at: a.reportedAt,
    reason: a.reason,
    failure_class: a.state === 'failed' ? (a.failureClass ?? null) : null,
  };
}

/** A rollout's assignments by device id. */
export async function loadAssignments(db: Db, rolloutId: number): Promise<Map<string, Assignment>> {
  const rows = await db.selectFrom('assignments').selectAll().where('rollout_id', '=', rolloutId).execute();
  return new Map(rows.map((r) => [r.device_id, toAssignment(r)]));
}

/** A rollout's assignments written after revision `rev`, oldest revision first (what a kept copy lacks). */
export async function assignmentsChangedSince(db: Db, rolloutId: number, rev: number): Promise<Assignment[]> {
  const rows = await db
    .selectFrom('assignments')
    .selectAll()
    .where('rollout_id', '=', rolloutId)
    .where('rev', '>', rev)
    .orderBy('rev')
    .execute();
  return rows.map(toAssignment);
}

/** Inserts or replaces assignments at revision `rev` (in chunks, under the drivers' parameter limits). */
export async function saveAssignments(
  db: Db,
  rolloutId: number,
  changed: Assignment[],
  rev: number,
): Promise<void> {
  for (let i = 0; i < changed.length; i += CHUNK) {
    const rows = changed.slice(i, i + CHUNK).map((a) => fromAssignment(rolloutId, a, rev));
    await insertShaped(db, 'saveAssignments', rows, CHUNK, () =>
      db
        .insertInto('assignments')
        .values(rows)
        .onConflict((oc) =>
          oc.columns(['rollout_id', 'device_id']).doUpdateSet((eb) => ({
            wave: eb.ref('excluded.wave'),
            state: eb.ref('excluded.state'),
            outcome: eb.ref('excluded.outcome'),
            from_version: eb.ref('excluded.from_version'),
            offered_at: eb.ref('excluded.offered_at'),
            reported_at: eb.ref('excluded.reported_at'),
            reason: eb.ref('excluded.reason'),
            failure_class: eb.ref('excluded.failure_class'),
            rev: eb.ref('excluded.rev'),
          })),
        ),
    );
  }
}

/**
 * Devices (all, or of `ids`) owned by another rollout of the component in one of `statuses` (the engine's
 * ACTIVE): such a device is busy for this rollout.
 */
export async function busyDevices(
  db: Db,
  component: string,
  exceptRolloutId: number,
  statuses: ReadonlySet<RolloutStatus>,
  ids?: readonly string[],
): Promise<Set<string>> {
  const rows = await inChunks(ids, (chunk) => {
    let q = db
      .selectFrom('assignments')
      .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
      .select('assignments.device_id')
      .where('rollouts.component', '=', component)
      .where('rollouts.id', '!=', exceptRolloutId)
      .where('rollouts.status', 'in', [...statuses])
      .where('assignments.state', 'in', [...OWNING]);
    if (chunk) q = q.where('assignments.device_id', 'in', chunk);
    return q.execute();
  });
  return new Set(rows.map((b) => b.device_id));
}

/** Per wave, state and outcome of a rollout: how many assignments, and how many were ever offered. */
export async function assignmentCounts(
  db: Db,
  rolloutId: number,
): Promise<
  Array<{ wave: number; state: AssignmentState; outcome: DeviceOutcome | null; n: number; offered: number }>
> {
  const rows = await db
    .selectFrom('assignments')
    .select([
      'wave',
      'state',
      'outcome',
      (eb) => eb.fn.countAll<number>().as('n'),
      (eb) => eb.fn.count<number>('offered_at').as('offered'),
    ])
    .where('rollout_id', '=', rolloutId)
    .groupBy(['wave', 'state', 'outcome'])
    .execute();
  // PostgreSQL answers counts as text (int8): numbers here, whatever the dialect.
  return rows.map((r) => ({ ...r, n: Number(r.n), offered: Number(r.offered) }));
}

/**
 * Takes a retired device out of the rollouts that had not offered it anything yet; returns how many. Each row is
 * written at a new revision of its rollout (`nextRev`, from db/rollouts.ts: this table does not write rollouts).
 */
export async function skipOpenAssignments(
  db: Db,
  deviceId: string,
  reason: string,
  now: number,
  nextRev: (rolloutId: number) => Promise<number>,
): Promise<number> {
  const open = await db
    .selectFrom('assignments')
    .select('rollout_id')
    .where('device_id', '=', deviceId)
    .where('state', 'in', ['queued', 'offered'])
    .execute();
  for (const { rollout_id } of open)
    await db
      .updateTable('assignments')
      .set({ state: 'skipped', reason, reported_at: now, rev: await nextRev(rollout_id) })
      .where('rollout_id', '=', rollout_id)
      .where('device_id', '=', deviceId)
      .execute();
  return open.length;
}

/** Every (component, version) a device was offered by a rollout or came from (what its reports may name). */
export async function releasesSeenByDevice(
  db: Db,
  deviceId: string,
): Promise<Array<{ component: string; version: string; fromVersion: string | null }>> {
  const rows = await db
    .selectFrom('assignments')
    .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
    .select(['rollouts.component', 'rollouts.version', 'assignments.from_version'])
    .where('assignments.device_id', '=', deviceId)
    .execute();
  return rows.map((r) => ({ component: r.component, version: r.version, fromVersion: r.from_version }));
}

/** Assignment states a device report can still move (see the engine's applyReport). */
export const REPORTABLE: ReadonlySet<AssignmentState> = new Set([
  'offered',
  'succeeded',
  'reverting',
  'unconfirmed',
]);

/** A device's assignments of a component that a report can still move, each with its rollout's target version. */
export async function reportableAssignments(
  db: Db,
  deviceId: string,
  component: string,
): Promise<Array<{ rolloutId: number; target: string; assignment: Assignment }>> {
  const rows = await db
    .selectFrom('assignments')
    .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
    .selectAll('assignments')
    .select('rollouts.version as target')
    .where('assignments.device_id', '=', deviceId)
    .where('rollouts.component', '=', component)
    .where('assignments.state', 'in', [...REPORTABLE])
    .execute();
  return rows.map((r) => ({ rolloutId: r.rollout_id, target: r.target, assignment: toAssignment(r) }));
}

/**
 * Stores a device's verdict on one assignment (state, outcome, when, why; the failure class while failed), at
 * revision `rev` of the rollout's assignments.
 */
export async function saveVerdict(db: Db, rolloutId: number, a: Assignment, rev: number): Promise<void> {
  await db
    .updateTable('assignments')
    .set({
      rev,
      state: a.state,
      outcome: a.outcome ?? null,
      reported_at: a.reportedAt,
      reason: a.reason,
      failure_class: a.state === 'failed' ? (a.failureClass ?? null) : null,
    })
    .where('rollout_id', '=', rolloutId)
    .where('device_id', '=', a.deviceId)
    .execute();
}

/** How many of a rollout's assignments are in each state (states with none are absent). */
export async function assignmentStateCounts(
  db: Db,
  rolloutId: number,
): Promise<Partial<Record<AssignmentState, number>>> {
  const rows = await db
    .selectFrom('assignments')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .where('rollout_id', '=', rolloutId)
    .groupBy('state')
    .execute();
  const counts: Partial<Record<AssignmentState, number>> = {};
  // PostgreSQL answers counts as text (int8): numbers here, whatever the dialect.
  for (const r of rows) counts[r.state] = Number(r.n);
  return counts;
}
