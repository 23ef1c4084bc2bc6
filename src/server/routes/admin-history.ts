// Admin API for per-device visibility: a rollout's devices and a device's transactions across rollouts, each with
// the health checks the device reported (name, result, duration and a bounded excerpt of the output).
//
// Everything under `detail` was written by a device: it is parsed defensively (any shape may arrive), every string
// is bounded, and an unclear check result counts as failed (fail safe on health).
import type { FastifyInstance } from 'fastify';
import type { Plan } from '../../engine/plan.ts';
import type { AssignmentState } from '../../engine/rollout-state.ts';
import type { Db } from '../../store/database.ts';
import { HttpError, type ServerContext } from '../context.ts';

/** Characters of a check's output kept in an answer (the tail: errors are usually at the end). */
export const CHECK_OUTPUT_MAX = 2000;
/** Checks listed per report; more are counted in `checks_omitted`. */
export const CHECKS_MAX = 50;
const NAME_MAX = 200;
const TEXT_MAX = 2000;

export const ASSIGNMENT_STATES = [
  'queued',
  'offered',
  'succeeded',
  'failed',
  'skipped',
  'reverting',
  'unconfirmed',
  'reverted',
] as const satisfies readonly AssignmentState[];

/** One health check as the device reported it, bounded. */
export interface CheckView {
  name: string;
  /** `ok` only when the device said ok: true; anything else (missing, unclear) is `failed`. */
  result: 'ok' | 'failed';
  duration_ms: number | null;
  /** The end of the output, at most CHECK_OUTPUT_MAX characters. */
  output: string;
  output_truncated: boolean;
}

/** A device transaction report (one apply: update or revert) with its checks. */
export interface ReportView {
  txn_id: string;
  component: string;
  version: string;
  outcome: string;
  class: string | null;
  reason: string | null;
  offline: boolean;
  attempts: number | null;
  received_at: number;
  checks: CheckView[];
  checks_omitted: number;
  /** The device's detail was above the server's limit and was not kept (only its size). */
  detail_truncated: boolean;
}

export interface WaveRef {
  index: number;
  name: string | null;
}

export interface RolloutDeviceView {
  device_id: string;
  name: string;
  retired: boolean;
  wave: WaveRef;
  state: string;
  from_version: string | null;
  to_version: string;
  offered_at: number | null;
  reported_at: number | null;
  /** Failure class from the device's report (health, timeout, crash-loop, …); null when it did not fail. */
  class: string | null;
  /** Why: the device's own reason when it reported a failure, otherwise the server's (e.g. a deadline). */
  reason: string | null;
  /** The device's newest report of this rollout's release since it was offered, if any. */
  report: ReportView | null;
}

export interface RolloutDevicesPage {
  rollout: { id: number; component: string; version: string; plan: string; status: string };
  total: number;
  limit: number;
  offset: number;
  next_offset: number | null;
  /** Devices of the rollout per assignment state (whatever the filter). */
  states: Record<string, number>;
  devices: RolloutDeviceView[];
}

export interface HistoryRolloutRef {
  id: number;
  component: string;
  version: string;
  plan: string;
  status: string;
  wave: WaveRef;
  state: string;
  from_version: string | null;
  reason: string | null;
}

export interface HistoryEntry extends ReportView {
  /** `update` when the report is of the rollout's release, `revert` when of the version it went back to. */
  kind: 'update' | 'revert' | null;
  rollout: HistoryRolloutRef | null;
}

export interface DeviceHistoryPage {
  device: { id: string; name: string; labels: Record<string, string>; retired_at: number | null };
  total: number;
  limit: number;
  offset: number;
  next_offset: number | null;
  transactions: HistoryEntry[];
  /** The device's place in its newest rollouts (at most 100), reported or not. */
  assignments: Array<HistoryRolloutRef & { offered_at: number | null; reported_at: number | null }>;
}

// ---- schemas ---------------------------------------------------------------------------------------------------

const nullableString = { type: ['string', 'null'] } as const;
const nullableInteger = { type: ['integer', 'null'] } as const;

const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  offset: { type: 'integer', minimum: 0, default: 0 },
} as const;

const checkSchema = {
  type: 'object',
  required: ['name', 'result', 'duration_ms', 'output', 'output_truncated'],
  properties: {
    name: { type: 'string' },
    result: { type: 'string', enum: ['ok', 'failed'] },
    duration_ms: { type: ['number', 'null'] },
    output: { type: 'string' },
    output_truncated: { type: 'boolean' },
  },
} as const;

const reportProperties = {
  txn_id: { type: 'string' },
  component: { type: 'string' },
  version: { type: 'string' },
  outcome: { type: 'string' },
  class: nullableString,
  reason: nullableString,
  offline: { type: 'boolean' },
  attempts: nullableInteger,
  received_at: { type: 'integer' },
  checks: { type: 'array', items: checkSchema },
  checks_omitted: { type: 'integer' },
  detail_truncated: { type: 'boolean' },
} as const;

const reportSchema = {
  type: 'object',
  required: Object.keys(reportProperties),
  properties: reportProperties,
} as const;

const waveSchema = {
  type: 'object',
  required: ['index', 'name'],
  properties: { index: { type: 'integer' }, name: nullableString },
} as const;

const pageProperties = {
  total: { type: 'integer' },
  limit: { type: 'integer' },
  offset: { type: 'integer' },
  next_offset: nullableInteger,
} as const;

const rolloutDevicesAnswer = {
  type: 'object',
  required: ['rollout', 'total', 'limit', 'offset', 'next_offset', 'states', 'devices'],
  properties: {
    rollout: {
      type: 'object',
      required: ['id', 'component', 'version', 'plan', 'status'],
      properties: {
        id: { type: 'integer' },
        component: { type: 'string' },
        version: { type: 'string' },
        plan: { type: 'string' },
        status: { type: 'string' },
      },
    },
    ...pageProperties,
    states: { type: 'object', additionalProperties: { type: 'integer' } },
    devices: {
      type: 'array',
      items: {
        type: 'object',
        required: [
          'device_id',
          'name',
          'retired',
          'wave',
          'state',
          'from_version',
          'to_version',
          'offered_at',
          'reported_at',
          'class',
          'reason',
          'report',
        ],
        properties: {
          device_id: { type: 'string' },
          name: { type: 'string' },
          retired: { type: 'boolean' },
          wave: waveSchema,
          state: { type: 'string' },
          from_version: nullableString,
          to_version: { type: 'string' },
          offered_at: nullableInteger,
          reported_at: nullableInteger,
          class: nullableString,
          reason: nullableString,
          report: { anyOf: [{ type: 'null' }, reportSchema] },
        },
      },
    },
  },
} as const;

const rolloutRefProperties = {
  id: { type: 'integer' },
  component: { type: 'string' },
  version: { type: 'string' },
  plan: { type: 'string' },
  status: { type: 'string' },
  wave: waveSchema,
  state: { type: 'string' },
  from_version: nullableString,
  reason: nullableString,
} as const;

const rolloutRefSchema = {
  type: 'object',
  required: Object.keys(rolloutRefProperties),
  properties: rolloutRefProperties,
} as const;

const historyAnswer = {
  type: 'object',
  required: ['device', 'total', 'limit', 'offset', 'next_offset', 'transactions', 'assignments'],
  properties: {
    device: {
      type: 'object',
      required: ['id', 'name', 'labels', 'retired_at'],
      properties: {
        id: { type: 'string' },
        name: { type: 'string' },
        labels: { type: 'object', additionalProperties: { type: 'string' } },
        retired_at: nullableInteger,
      },
    },
    ...pageProperties,
    transactions: {
      type: 'array',
      items: {
        type: 'object',
        required: [...Object.keys(reportProperties), 'kind', 'rollout'],
        properties: {
          ...reportProperties,
          kind: { type: ['string', 'null'], enum: ['update', 'revert', null] },
          rollout: { anyOf: [{ type: 'null' }, rolloutRefSchema] },
        },
      },
    },
    assignments: {
      type: 'array',
      items: {
        type: 'object',
        required: [...Object.keys(rolloutRefProperties), 'offered_at', 'reported_at'],
        properties: { ...rolloutRefProperties, offered_at: nullableInteger, reported_at: nullableInteger },
      },
    },
  },
} as const;

const errorAnswer = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
} as const;

// ---- device-written detail, read defensively -----------------------------------------------------------------

function bounded(v: unknown, max = TEXT_MAX): string | null {
  if (typeof v !== 'string') return null;
  return v.length > max ? `${v.slice(0, max)}…` : v;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** One check from whatever the device sent. */
export function checkView(raw: unknown): CheckView {
  const c = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const output = typeof c.output === 'string' ? c.output : '';
  const d = c.durationMs;
  return {
    name: bounded(c.name, NAME_MAX) ?? '(unnamed)',
    result: c.ok === true ? 'ok' : 'failed',
    duration_ms: typeof d === 'number' && Number.isFinite(d) && d >= 0 ? Math.round(d) : null,
    output: output.length > CHECK_OUTPUT_MAX ? output.slice(-CHECK_OUTPUT_MAX) : output,
    output_truncated: output.length > CHECK_OUTPUT_MAX,
  };
}

interface ReportRow {
  txn_id: string;
  device_id: string;
  component: string;
  version: string;
  outcome: string;
  reason: string | null;
  detail: string;
  received_at: number;
}

export function reportView(r: ReportRow): ReportView {
  const parsed = parseJson(r.detail);
  const detail = (parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {}) as Record<
    string,
    unknown
  >;
  const list = Array.isArray(detail.checks) ? detail.checks : [];
  const attempts = detail.attempts;
  return {
    txn_id: r.txn_id,
    component: r.component,
    version: r.version,
    outcome: r.outcome,
    class: bounded(detail.class, 64),
    reason: bounded(r.reason),
    offline: detail.offline === true,
    attempts: typeof attempts === 'number' && Number.isSafeInteger(attempts) ? attempts : null,
    received_at: Number(r.received_at),
    checks: list.slice(0, CHECKS_MAX).map(checkView),
    checks_omitted: Math.max(0, list.length - CHECKS_MAX),
    detail_truncated: detail.truncated === true,
  };
}

// ---- helpers ---------------------------------------------------------------------------------------------------

/** Limits and offsets: the schema's coercion lets "1e400" through as Infinity, so only safe integers pass. */
function paging(q: { limit: number; offset: number }): { limit: number; offset: number } {
  if (!Number.isSafeInteger(q.limit) || q.limit < 1 || q.limit > 1000)
    throw new HttpError(400, 'limit must be a whole number 1–1000');
  if (!Number.isSafeInteger(q.offset) || q.offset < 0)
    throw new HttpError(400, 'offset must be a whole number ≥ 0');
  return { limit: q.limit, offset: q.offset };
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

// ---- routes ----------------------------------------------------------------------------------------------------

export function adminHistoryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  app.get(
    '/v1/admin/rollouts/:id/devices',
    {
      schema: {
        summary:
          "A rollout's devices: wave, state, versions, failure class and reason, and the checks they reported",
        tags: ['rollouts'],
        params: {
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'integer', minimum: 1 } },
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...pageQuery,
            state: { type: 'string', enum: [...ASSIGNMENT_STATES] },
          },
        },
        response: { 200: rolloutDevicesAnswer, '4xx': errorAnswer },
      },
    },
    async (req): Promise<RolloutDevicesPage> => {
      const id = (req.params as { id: number }).id;
      if (!Number.isSafeInteger(id)) throw new HttpError(400, 'rollout id must be a whole number');
      const q = req.query as { limit: number; offset: number; state?: string };
      const { limit, offset } = paging(q);
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
      const total = q.state ? (states[q.state] ?? 0) : Object.values(states).reduce((a, b) => a + b, 0);

      let pq = db
        .selectFrom('assignments')
        .leftJoin('devices', 'devices.id', 'assignments.device_id')
        .select([
          'assignments.device_id',
          'assignments.wave',
          'assignments.state',
          'assignments.from_version',
          'assignments.offered_at',
          'assignments.reported_at',
          'assignments.reason',
          'devices.name',
          'devices.retired_at',
        ])
        .where('assignments.rollout_id', '=', id);
      if (q.state) pq = pq.where('assignments.state', '=', q.state);
      const rows = await pq
        .orderBy('assignments.wave')
        .orderBy('devices.name')
        .orderBy('assignments.device_id')
        .limit(limit)
        .offset(offset)
        .execute();

      // The reports of this rollout's release by the devices of this page, newest first.
      const reports =
        rows.length === 0
          ? []
          : await db
              .selectFrom('reports')
              .selectAll()
              .where(
                'device_id',
                'in',
                rows.map((r) => r.device_id),
              )
              .where('component', '=', ro.component)
              .where('version', '=', ro.version)
              .orderBy('received_at', 'desc')
              .orderBy('txn_id', 'desc')
              .execute();
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
        rollout: {
          id: ro.id,
          component: ro.component,
          version: ro.version,
          plan: ro.plan_name,
          status: ro.status,
        },
        total,
        limit,
        offset,
        next_offset: offset + rows.length < total && rows.length > 0 ? offset + rows.length : null,
        states,
        devices,
      };
    },
  );

  app.get(
    '/v1/admin/devices/:id/history',
    {
      schema: {
        summary:
          "A device's transactions across rollouts, newest first, with the checks it reported (id or name)",
        tags: ['fleet'],
        params: {
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
        },
        querystring: { type: 'object', additionalProperties: false, properties: { ...pageQuery } },
        response: { 200: historyAnswer, '4xx': errorAnswer },
      },
    },
    async (req): Promise<DeviceHistoryPage> => {
      const { limit, offset } = paging(req.query as { limit: number; offset: number });
      const dev = await findDevice(db, (req.params as { id: string }).id);
      const counted = await db
        .selectFrom('reports')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('device_id', '=', dev.id)
        .executeTakeFirstOrThrow();
      const total = Number(counted.n);
      const reports = await db
        .selectFrom('reports')
        .selectAll()
        .where('device_id', '=', dev.id)
        .orderBy('received_at', 'desc')
        .orderBy('txn_id', 'desc')
        .limit(limit)
        .offset(offset)
        .execute();

      const assignmentCols = [
        'assignments.rollout_id',
        'assignments.wave',
        'assignments.state',
        'assignments.from_version',
        'assignments.offered_at',
        'assignments.reported_at',
        'assignments.reason',
        'rollouts.component',
        'rollouts.version',
        'rollouts.plan_name',
        'rollouts.plan',
        'rollouts.status',
      ] as const;
      const components = [...new Set(reports.map((r) => r.component))];
      const linked =
        components.length === 0
          ? []
          : await db
              .selectFrom('assignments')
              .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
              .select(assignmentCols)
              .where('assignments.device_id', '=', dev.id)
              .where('rollouts.component', 'in', components)
              .orderBy('assignments.offered_at', 'desc')
              .execute();
      const newest = await db
        .selectFrom('assignments')
        .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
        .select(assignmentCols)
        .where('assignments.device_id', '=', dev.id)
        .orderBy('assignments.rollout_id', 'desc')
        .limit(100)
        .execute();

      const wave = waveNamer();
      const ref = (a: (typeof newest)[number]): HistoryRolloutRef => ({
        id: a.rollout_id,
        component: a.component,
        version: a.version,
        plan: a.plan_name,
        status: a.status,
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
        total,
        limit,
        offset,
        next_offset: offset + reports.length < total && reports.length > 0 ? offset + reports.length : null,
        transactions,
        assignments: newest.map((a) => ({ ...ref(a), offered_at: a.offered_at, reported_at: a.reported_at })),
      };
    },
  );
}
