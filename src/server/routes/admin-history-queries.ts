// The queries behind the per-device visibility routes (admin-history.ts) and the mapping of their rows to the
// answers (admin-history-views.ts): a rollout's devices with the report each sent, and a device's reports across
// rollouts, each linked to the rollout it belongs to.
import type { Plan } from '../../engine/plan.ts';
import { HttpError } from '../context.ts';
import type { Db } from '../db/database.ts';
import type { ReportTable } from '../db/schema.ts';
import {
  type DeviceHistoryPage,
  type HistoryEntry,
  type HistoryRolloutRef,
  type Page,
  parseJson,
  type RolloutDevicesPage,
  type RolloutDeviceView,
  type RolloutSummary,
  reportView,
  type WaveRef,
} from './admin-history-views.ts';

export interface Paging {
  limit: number;
  offset: number;
}

/** Limits and offsets from a query the schema bounded (1–1000, ≥ 0) and the server checked for usable numbers. */
export function paging(q: Paging): Paging {
  return { limit: q.limit, offset: q.offset };
}

/** The paging part of an answer that lists `shown` of `total` rows from `offset` on. */
function page({ limit, offset }: Paging, shown: number, total: number): Page {
  return { total, limit, offset, next_offset: offset + shown < total && shown > 0 ? offset + shown : null };
}

/** Wave names by index from a rollout's plan snapshot (cached per request). */
function waveNamer(): (rolloutId: number, planJson: string, index: number) => WaveRef {
  const cache = new Map<number, string[]>();
  return (rolloutId, planJson, index) => {
    let names = cache.get(rolloutId);
    if (!names) {
      const plan = parseJson(planJson) as Partial<Plan> | null;
      names = Array.isArray(plan?.waves) ? plan.waves.map((w) => String(w?.name ?? '')) : [];
      cache.set(rolloutId, names);
    }
    return { index, name: names[index] ?? null };
  };
}

/** Rollout `id` in a few words, from its row (or a row joined with it). */
function rolloutSummary(
  id: number,
  r: { component: string; version: string; plan_name: string; status: string },
): RolloutSummary {
  return { id, component: r.component, version: r.version, plan: r.plan_name, status: r.status };
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

/** Reports, newest first. */
const reportsNewestFirst = (db: Db) =>
  db.selectFrom('reports').selectAll().orderBy('received_at', 'desc').orderBy('txn_id', 'desc');

/** A rollout's devices (all, or those in `state`), a page of them, each with its newest report of the release. */
export async function rolloutDevices(
  db: Db,
  id: number,
  state: string | undefined,
  paged: Paging,
): Promise<RolloutDevicesPage> {
  const ro = await db
    .selectFrom('rollouts')
    .select(['id', 'component', 'version', 'plan_name', 'plan', 'status'])
    .where('id', '=', id)
    .executeTakeFirst();
  if (!ro) throw new HttpError(404, `no rollout ${id}`);

  const stateRows = await db
    .selectFrom('assignments')
    .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
    .where('rollout_id', '=', id)
    .groupBy('state')
    .execute();
  const states: Record<string, number> = {};
  for (const s of stateRows) states[s.state] = Number(s.n);
  const total = state ? (states[state] ?? 0) : Object.values(states).reduce((a, b) => a + b, 0);

  let pq = db
    .selectFrom('assignments')
    .leftJoin('devices', 'devices.id', 'assignments.device_id')
    .select(['assignments.device_id', ...ASSIGNMENT_COLUMNS, 'devices.name', 'devices.retired_at'])
    .where('assignments.rollout_id', '=', id);
  if (state) pq = pq.where('assignments.state', '=', state);
  const rows = await pq
    .orderBy('assignments.wave')
    .orderBy('devices.name')
    .orderBy('assignments.device_id')
    .limit(paged.limit)
    .offset(paged.offset)
    .execute();

  // The reports of this rollout's release by the devices of this page, newest first.
  const reports =
    rows.length === 0
      ? []
      : await reportsNewestFirst(db)
          .where(
            'device_id',
            'in',
            rows.map((r) => r.device_id),
          )
          .where('component', '=', ro.component)
          .where('version', '=', ro.version)
          .execute();
  const byDevice = new Map<string, ReportTable[]>();
  for (const r of reports) {
    const list = byDevice.get(r.device_id) ?? [];
    list.push(r);
    byDevice.set(r.device_id, list);
  }
  const wave = waveNamer();
  const devices = rows.map((a): RolloutDeviceView => {
    // The newest report since this device was offered the release (an offer made again by a retry starts
    // afresh), and not after the assignment's outcome was recorded when there is one.
    const candidates = (byDevice.get(a.device_id) ?? []).filter(
      (r) => a.offered_at !== null && Number(r.received_at) >= Number(a.offered_at),
    );
    const settled = candidates.find(
      (r) => a.reported_at !== null && Number(r.received_at) <= Number(a.reported_at),
    );
    const row = settled ?? candidates[0];
    const report = row ? reportView(row) : null;
    const failed = report !== null && report.outcome !== 'succeeded';
    return {
      device_id: a.device_id,
      name: a.name ?? a.device_id,
      retired: a.retired_at !== null && a.retired_at !== undefined,
      wave: wave(ro.id, ro.plan, a.wave),
      state: a.state,
      from_version: a.from_version,
      to_version: ro.version,
      offered_at: a.offered_at,
      reported_at: a.reported_at,
      class: failed ? report.class : null,
      reason: failed && report.reason ? report.reason : a.reason,
      report,
    };
  });
  return {
    rollout: rolloutSummary(ro.id, ro),
    ...page(paged, rows.length, total),
    states,
    devices,
  };
}

interface DeviceRow {
  id: string;
  name: string;
  labels: string;
  retired_at: number | null;
}

/**
 * A device by id or name, retired ones included (their history is kept). An id wins; a name resolves to the one
 * enrolled device carrying it, or else to the one retired device that did; a name several carry is a 409.
 */
async function findDevice(db: Db, key: string): Promise<DeviceRow> {
  const rows = await db
    .selectFrom('devices')
    .select(['id', 'name', 'labels', 'retired_at'])
    .where((eb) => eb.or([eb('id', '=', key), eb('name', '=', key)]))
    .execute();
  const exact = rows.find((r) => r.id === key);
  if (exact) return exact;
  if (rows.length === 0) throw new HttpError(404, `no device ${key}`);
  const live = rows.filter((r) => r.retired_at === null);
  const pool = live.length > 0 ? live : rows;
  if (pool.length > 1)
    throw new HttpError(
      409,
      `${pool.length} ${live.length ? '' : 'retired '}devices are named "${key}": use a device id`,
    );
  return pool[0];
}

/** A device's reports across rollouts (by id or name), a page of them, and its newest rollouts. */
export async function deviceHistory(db: Db, key: string, paged: Paging): Promise<DeviceHistoryPage> {
  const dev = await findDevice(db, key);
  const counted = await db
    .selectFrom('reports')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('device_id', '=', dev.id)
    .executeTakeFirstOrThrow();
  const total = Number(counted.n);
  const reports = await reportsNewestFirst(db)
    .where('device_id', '=', dev.id)
    .limit(paged.limit)
    .offset(paged.offset)
    .execute();

  const assignments = () =>
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
      .where('assignments.device_id', '=', dev.id);
  const components = [...new Set(reports.map((r) => r.component))];
  const linked =
    components.length === 0
      ? []
      : await assignments()
          .where('rollouts.component', 'in', components)
          .orderBy('assignments.offered_at', 'desc')
          .execute();
  const newest = await assignments().orderBy('assignments.rollout_id', 'desc').limit(100).execute();

  const wave = waveNamer();
  const ref = (a: (typeof newest)[number]): HistoryRolloutRef => ({
    ...rolloutSummary(a.rollout_id, a),
    wave: wave(a.rollout_id, a.plan, a.wave),
    state: a.state,
    from_version: a.from_version,
    reason: a.reason,
  });
  const transactions = reports.map((r): HistoryEntry => {
    // The rollout that offered this version most recently before the report arrived: as its release
    // (an update) or as the version a device went back to (a revert).
    let best: { a: (typeof linked)[number]; kind: 'update' | 'revert' } | null = null;
    for (const a of linked) {
      if (a.component !== r.component || a.offered_at === null) continue;
      if (Number(a.offered_at) > Number(r.received_at)) continue;
      const kind = a.version === r.version ? 'update' : a.from_version === r.version ? 'revert' : null;
      if (!kind) continue;
      if (
        !best ||
        Number(a.offered_at) > Number(best.a.offered_at) ||
        (Number(a.offered_at) === Number(best.a.offered_at) && kind === 'update')
      )
        best = { a, kind };
    }
    return { ...reportView(r), kind: best?.kind ?? null, rollout: best ? ref(best.a) : null };
  });
  const labels = parseJson(dev.labels);
  return {
    device: {
      id: dev.id,
      name: dev.name,
      labels: labels && typeof labels === 'object' ? (labels as Record<string, string>) : {},
      retired_at: dev.retired_at,
    },
    ...page(paged, reports.length, total),
    transactions,
    assignments: newest.map((a) => ({ ...ref(a), offered_at: a.offered_at, reported_at: a.reported_at })),
  };
}
