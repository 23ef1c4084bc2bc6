// Table `rollouts`: a release going through a snapshot of a plan, with the engine's state. Every query of the
// table lives here.
import type { Generated, Selectable, Updateable } from 'kysely';
import type { Plan } from '../../engine/plan.ts';
import type { RolloutState, RolloutStatus } from '../../engine/rollout-state.ts';
import type { Db } from './database.ts';
import { decode, encode, type Json } from './json.ts';

/** A device channel: `early` gets a release first; `general` only once it was promoted there. */
export type Channel = 'early' | 'general';

export interface RolloutTable {
  id: Generated<number>;
  component: string;
  version: string;
  plan_name: string;
  plan: Json<Plan>; // snapshot of the plan at start: later edits do not change a running rollout
  status: RolloutStatus;
  state: Json<RolloutState>;
  wake_at: number | null;
  dirty: 0 | 1; // news (reports, fleet changes) the driver has not stepped yet
  created_at: number;
  updated_at: number;
  channel: Channel | null; // only devices of this channel; null = every device
  asg_rev: Generated<number>; // the latest revision of its assignments (see assignments.rev)
  started_by: string | null; // the actor who started it (four eyes); null on rows from before
}

export type RolloutRow = Selectable<RolloutTable>;
export type RolloutUpdate = Updateable<RolloutTable>;

/** A rollout as the services see it. */
export interface Rollout {
  id: number;
  component: string;
  version: string;
  planName: string;
  plan: Plan;
  status: RolloutStatus;
  state: RolloutState;
  wakeAt: number | null;
  dirty: boolean;
  createdAt: number;
  updatedAt: number;
  channel: Channel | null;
  /** The revision of its assignments this row was read at (bumped by every write to them). */
  asgRev: number;
  /** The actor who started it; null on rollouts from before four eyes. */
  startedBy: string | null;
}

/** Maps a row to a `Rollout`. */
export function toRollout(r: RolloutRow): Rollout {
  return {
    id: r.id,
    component: r.component,
    version: r.version,
    planName: r.plan_name,
    plan: decode(r.plan),
    status: r.status,
    state: decode(r.state),
    wakeAt: r.wake_at,
    dirty: r.dirty === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    channel: r.channel,
    asgRev: Number(r.asg_rev), // PostgreSQL answers bigint as text
    startedBy: r.started_by ?? null,
  };
}

/** One rollout, or undefined; `lock` takes its row lock (PostgreSQL; SQLite's writer lock serialises anyway). */
export async function findRollout(
  db: Db,
  id: number,
  lock: 'for-update' | 'none' = 'none',
): Promise<Rollout | undefined> {
  let q = db.selectFrom('rollouts').selectAll().where('id', '=', id);
  if (lock === 'for-update') q = q.forUpdate();
  const row = await q.executeTakeFirst();
  return row && toRollout(row);
}

/** What a rollout's history shows of it (no engine state), or undefined. */
export async function rolloutHeading(
  db: Db,
  id: number,
): Promise<Pick<RolloutRow, 'id' | 'component' | 'version' | 'plan_name' | 'plan' | 'status'> | undefined> {
  return db
    .selectFrom('rollouts')
    .select(['id', 'component', 'version', 'plan_name', 'plan', 'status'])
    .where('id', '=', id)
    .executeTakeFirst();
}

/** Ids of every rollout, oldest first. */
export async function listRolloutIds(db: Db): Promise<number[]> {
  const rows = await db.selectFrom('rollouts').select('id').orderBy('id').execute();
  return rows.map((r) => r.id);
}

/** Rollouts of a component whose status is one of `statuses` (id and version), oldest first. */
export async function rolloutsOfComponentIn(
  db: Db,
  component: string,
  statuses: ReadonlySet<RolloutStatus>,
): Promise<Array<{ id: number; version: string }>> {
  return db
    .selectFrom('rollouts')
    .select(['id', 'version'])
    .where('component', '=', component)
    .where('status', 'in', [...statuses])
    .orderBy('id')
    .execute();
}

/** Ids of every rollout whose status is one of `statuses`, oldest first. */
export async function rolloutIdsIn(db: Db, statuses: ReadonlySet<RolloutStatus>): Promise<number[]> {
  if (statuses.size === 0) return [];
  const rows = await db
    .selectFrom('rollouts')
    .select('id')
    .where('status', 'in', [...statuses])
    .orderBy('id')
    .execute();
  return rows.map((r) => r.id);
}

/** True when this release completed a rollout on the given channel (the promotion gate asks for 'early'). */
export async function completedOnChannel(
  db: Db,
  component: string,
  version: string,
  channel: Channel,
): Promise<boolean> {
  const row = await db
    .selectFrom('rollouts')
    .select('id')
    .where('component', '=', component)
    .where('version', '=', version)
    .where('channel', '=', channel)
    .where('status', '=', 'completed')
    .executeTakeFirst();
  return row !== undefined;
}

/** Rollouts in `statuses` that have news or whose wake time has come (what the driver steps). */
export async function dueRollouts(
  db: Db,
  statuses: ReadonlySet<RolloutStatus>,
  now: number,
): Promise<Array<{ id: number; wakeAt: number | null }>> {
  const rows = await db
    .selectFrom('rollouts')
    .select(['id', 'wake_at'])
    .where('status', 'in', [...statuses])
    .where((eb) => eb.or([eb('dirty', '=', 1), eb('wake_at', '<=', now)]))
    .execute();
  return rows.map((r) => ({ id: r.id, wakeAt: r.wake_at }));
}

/**
 * Inserts a new pending rollout and returns its id. The engine state names the rollout by its id, so it is
 * built by `state(id)` once the id exists (same transaction).
 */
export async function insertRollout(
  db: Db,
  r: {
    component: string;
    version: string;
    planName: string;
    plan: Plan;
    channel: Channel | null;
    now: number;
    startedBy?: string | null;
  },
  state: (id: number) => RolloutState,
): Promise<number> {
  const inserted = await db
    .insertInto('rollouts')
    .values({
      component: r.component,
      version: r.version,
      plan_name: r.planName,
      plan: encode(r.plan),
      status: 'pending',
      state: encode(state(0)), // replaced below, in the same transaction, once the id is known
      wake_at: r.now,
      dirty: 1,
      created_at: r.now,
      updated_at: r.now,
      channel: r.channel,
      started_by: r.startedBy ?? null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .updateTable('rollouts')
    .set({ state: encode(state(inserted.id)) })
    .where('id', '=', inserted.id)
    .execute();
  return inserted.id;
}

/** Stores the state a step produced; the rollout has no news left. */
export async function saveRolloutState(
  db: Db,
  id: number,
  state: RolloutState,
  wakeAt: number | null,
  now: number,
): Promise<void> {
  await db
    .updateTable('rollouts')
    .set({ status: state.status, state: encode(state), wake_at: wakeAt, dirty: 0, updated_at: now })
    .where('id', '=', id)
    .execute();
}

/** Marks rollouts as having news (all, or only those in `statuses`); the driver steps them soon. */
export async function markRolloutsDirty(db: Db, statuses?: ReadonlySet<RolloutStatus>): Promise<void> {
  let q = db.updateTable('rollouts').set({ dirty: 1 });
  if (statuses) q = q.where('status', 'in', [...statuses]);
  await q.execute();
}

/**
 * Opens a new revision of a rollout's assignments, for a write to them in this transaction; `news` also marks the
 * rollout as having news (a device report). Returns the revision to write on the changed rows. On PostgreSQL the
 * update takes the rollout's row lock until commit, so revisions commit in order.
 */
export async function nextAssignmentRev(db: Db, id: number, news: boolean): Promise<number> {
  const row = await db
    .updateTable('rollouts')
    .set((eb) => ({ asg_rev: eb('asg_rev', '+', 1), ...(news ? { dirty: 1 as const } : {}) }))
    .where('id', '=', id)
    .returning('asg_rev')
    .executeTakeFirstOrThrow();
  return Number(row.asg_rev);
}

/** Marks every rollout in `status` that has no news yet (check-ins let rolling-back rollouts look again). */
export async function markCleanRolloutsDirty(db: Db, status: RolloutStatus): Promise<void> {
  await db
    .updateTable('rollouts')
    .set({ dirty: 1 })
    .where('status', '=', status)
    .where('dirty', '=', 0)
    .execute();
}

/** Every (component, version) some rollout has ever used (release gc keeps them). */
export async function rolloutReleaseRefs(db: Db): Promise<Array<{ component: string; version: string }>> {
  return db.selectFrom('rollouts').select(['component', 'version']).execute();
}
