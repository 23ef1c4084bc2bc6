// The per-device visibility routes (routes/admin-history.ts): their reads (db/history.ts and the table modules)
// mapped to the answers (history-views.ts): a rollout's devices with the report each sent, and a device's reports
// across rollouts, each linked to the rollout it belongs to.
import type { Plan } from '../../engine/plan.ts';
import type { AssignmentState } from '../../engine/rollout-state.ts';
import { assignmentStateCounts } from '../db/assignments.ts';
import type { Db } from '../db/database.ts';
import { type Device, devicesByKey } from '../db/devices.ts';
import {
  type DeviceAssignmentRow,
  deviceAssignmentsOf,
  newestDeviceAssignments,
  type Paging,
  rolloutDeviceRows,
} from '../db/history.ts';
import { decode, type Json } from '../db/json.ts';
import { countDeviceReports, deviceReportsPage, type ReportRow, reportsOfRelease } from '../db/reports.ts';
import { rolloutHeading } from '../db/rollouts.ts';
import { conflict, notFound } from '../errors.ts';
import {
  type DeviceHistoryPage,
  type HistoryEntry,
  type HistoryRolloutRef,
  type Page,
  type RolloutDevicesPage,
  type RolloutDeviceView,
  type RolloutSummary,
  reportView,
  type WaveRef,
} from './history-views.ts';

export type { Paging };

/** Limits and offsets from a query the schema bounded (1–1000, ≥ 0) and the server checked for usable numbers. */
export function paging(q: Paging): Paging {
  return { limit: q.limit, offset: q.offset };
}

/** The paging part of an answer that lists `shown` of `total` rows from `offset` on. */
function page({ limit, offset }: Paging, shown: number, total: number): Page {
  return { total, limit, offset, next_offset: offset + shown < total && shown > 0 ? offset + shown : null };
}

/** Wave names by index from a rollout's plan snapshot (cached per request). */
function waveNamer(): (rolloutId: number, planJson: Json<Plan>, index: number) => WaveRef {
  const cache = new Map<number, string[]>();
  return (rolloutId, planJson, index) => {
    let names = cache.get(rolloutId);
    if (!names) {
      names = decode(planJson).waves.map((w) => w.name);
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

/** A rollout's devices (all, or those in `state`), a page of them, each with its newest report of the release. */
export async function rolloutDevices(
  db: Db,
  id: number,
  state: AssignmentState | undefined,
  paged: Paging,
): Promise<RolloutDevicesPage> {
  const ro = await rolloutHeading(db, id);
  if (!ro) throw notFound(`no rollout ${id}`);

  const states: Record<string, number> = await assignmentStateCounts(db, id);
  const total = state ? (states[state] ?? 0) : Object.values(states).reduce((a, b) => a + b, 0);

  const rows = await rolloutDeviceRows(db, id, state, paged);

  // The reports of this rollout's release by the devices of this page, newest first.
  const reports = await reportsOfRelease(
    db,
    rows.map((r) => r.device_id),
    ro.component,
    ro.version,
  );
  const byDevice = new Map<string, ReportRow[]>();
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

/**
 * A device by id or name, retired ones included (their history is kept). An id wins; a name resolves to the one
 * enrolled device carrying it, or else to the one retired device that did; a name several carry is a 409.
 */
async function findDevice(db: Db, key: string): Promise<Device> {
  const rows = await devicesByKey(db, key);
  const exact = rows.find((r) => r.id === key);
  if (exact) return exact;
  if (rows.length === 0) throw notFound(`no device ${key}`);
  const live = rows.filter((r) => r.retiredAt === null);
  const pool = live.length > 0 ? live : rows;
  if (pool.length > 1)
    throw conflict(
      `${pool.length} ${live.length ? '' : 'retired '}devices are named "${key}": use a device id`,
    );
  return pool[0];
}

/** A device's reports across rollouts (by id or name), a page of them, and its newest rollouts. */
export async function deviceHistory(db: Db, key: string, paged: Paging): Promise<DeviceHistoryPage> {
  const dev = await findDevice(db, key);
  const total = await countDeviceReports(db, dev.id);
  const reports = await deviceReportsPage(db, dev.id, paged);

  const components = [...new Set(reports.map((r) => r.component))];
  const linked = await deviceAssignmentsOf(db, dev.id, components);
  const newest = await newestDeviceAssignments(db, dev.id, 100);

  const wave = waveNamer();
  const ref = (a: DeviceAssignmentRow): HistoryRolloutRef => ({
    ...rolloutSummary(a.rollout_id, a),
    wave: wave(a.rollout_id, a.plan, a.wave),
    state: a.state,
    from_version: a.from_version,
    reason: a.reason,
  });
  const transactions = reports.map((r): HistoryEntry => {
    // The rollout that offered this version most recently before the report arrived: as its release
    // (an update) or as the version a device went back to (a revert).
    let best: { a: DeviceAssignmentRow; kind: 'update' | 'revert' } | null = null;
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
  return {
    device: {
      id: dev.id,
      name: dev.name,
      labels: dev.labels,
      retired_at: dev.retiredAt,
    },
    ...page(paged, reports.length, total),
    transactions,
    assignments: newest.map((a) => ({ ...ref(a), offered_at: a.offered_at, reported_at: a.reported_at })),
  };
}
