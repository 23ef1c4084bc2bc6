// The aggregate counts /metrics reports about the database's state (metrics.ts asks for them at scrape time).
// Each is one `count(*) … group by` so a scrape costs a few index or table scans, never a row per device sent to
// Node; the callers cache the answer (metrics.ts) so frequent scrapes cannot load the database.
import type { Plan } from '../../engine/plan.ts';
import { ACTIVE, type AssignmentState } from '../../engine/rollout-state.ts';
import type { Db } from './database.ts';
import { lockGroups, lockHoldersByGroup } from './fleet-locks.ts';
import { decode } from './json.ts';

/** At most this many active rollouts and lock groups get series of their own: label cardinality stays bounded. */
export const MAX_LABELLED_ROLLOUTS = 50;
export const MAX_LABELLED_GROUPS = 200;

export interface WaveCount {
  rollout: string;
  wave: string;
  state: AssignmentState;
  n: number;
}

export interface FleetCounts {
  rolloutsByStatus: Map<string, number>;
  /** Devices per (active rollout, started wave, state). */
  waveDevices: WaveCount[];
  /** The waves each labelled rollout has started (rollout id → wave names), so absent states read 0. */
  startedWaves: Map<string, string[]>;
  devices: number;
  devicesStale: number;
  lockHolders: Map<string, number>;
  lockSlots: Map<string, number>;
  outboxPending: number;
}

/** Reads every count; `staleBefore`: a device last seen before this instant is stale; `now` for lock leases. */
export async function readFleetCounts(db: Db, now: number, staleBefore: number): Promise<FleetCounts> {
  const statuses = await db
    .selectFrom('rollouts')
    .select(['status', (eb) => eb.fn.countAll().as('n')])
    .groupBy('status')
    .execute();
  const { waveDevices, startedWaves } = await readWaveDevices(db);
  // One pass over devices; no index on last_seen_at on purpose: every check-in writes it (see monitoring.md).
  const fleet = await db
    .selectFrom('devices')
    .select([
      (eb) => eb.fn.countAll().as('total'),
      (eb) =>
        eb.fn.sum<number>(eb.case().when('last_seen_at', '<', staleBefore).then(1).else(0).end()).as('stale'),
    ])
    .where('retired_at', 'is', null)
    .executeTakeFirstOrThrow();
  // Expired holders not yet swept hold nothing (FleetLock frees them on the next acquire).
  const holders = (await lockHoldersByGroup(db, now)).slice(0, MAX_LABELLED_GROUPS);
  const groups = (await lockGroups(db)).slice(0, MAX_LABELLED_GROUPS);
  // Served by index webhook_outbox_due (delivered_at, failed_at, …).
  const pending = await db
    .selectFrom('webhook_outbox')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .executeTakeFirstOrThrow();
  // PostgreSQL answers count(*) as int8 and sum() as numeric (text); Number() reads both.
  const lockHolders = new Map(holders.map((r) => [r.group, r.holders]));
  const lockSlots = new Map(groups.map((r) => [r.name, Number(r.slots)]));
  return {
    rolloutsByStatus: new Map(statuses.map((r) => [r.status, Number(r.n)])),
    waveDevices,
    startedWaves,
    devices: Number(fleet.total),
    devicesStale: Number(fleet.stale ?? 0),
    lockHolders,
    lockSlots,
    outboxPending: Number(pending.n),
  };
}

/** Devices per wave and state of the active rollouts only (finished ones would grow the series without end). */
async function readWaveDevices(
  db: Db,
): Promise<{ waveDevices: WaveCount[]; startedWaves: Map<string, string[]> }> {
  const active = await db
    .selectFrom('rollouts')
    .select(['id', 'plan'])
    .where('status', 'in', [...ACTIVE])
    .orderBy('id', 'desc')
    .limit(MAX_LABELLED_ROLLOUTS)
    .execute();
  const startedWaves = new Map<string, string[]>();
  if (active.length === 0) return { waveDevices: [], startedWaves };
  const names = new Map<number, string[]>();
  for (const r of active)
    names.set(
      r.id,
      (decode(r.plan) as Plan).waves.map((w) => w.name),
    );
  const rows = await db
    .selectFrom('assignments')
    .select(['rollout_id', 'wave', 'state', (eb) => eb.fn.countAll().as('n')])
    .where(
      'rollout_id',
      'in',
      active.map((r) => r.id),
    )
    .groupBy(['rollout_id', 'wave', 'state'])
    .execute();
  const waveDevices: WaveCount[] = [];
  for (const r of rows) {
    const rollout = String(r.rollout_id);
    // A wave name from the rollout's plan snapshot; the index only if the snapshot lacks it.
    const wave = names.get(r.rollout_id)?.[r.wave] ?? String(r.wave);
    waveDevices.push({ rollout, wave, state: r.state as AssignmentState, n: Number(r.n) });
    const started = startedWaves.get(rollout) ?? [];
    if (!started.includes(wave)) started.push(wave);
    startedWaves.set(rollout, started);
  }
  return { waveDevices, startedWaves };
}
