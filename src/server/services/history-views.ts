// The shapes the per-device visibility API answers with (routes in ../routes/admin-history.ts), and the reading
// of what a device wrote into a report's `detail`: it is parsed defensively (any shape may arrive), every string
// is bounded, and an unclear check result counts as failed (fail safe on health).
//
// Nothing here needs the server at run time: the CLI and the dashboard take the shapes (and states) from here.
import type { ReportRow } from '../db/reports.ts';

/** Characters of a check's output kept in an answer (the tail: errors are usually at the end). */
export const CHECK_OUTPUT_MAX = 2000;
/** Checks listed per report; more are counted in `checks_omitted`. */
export const CHECKS_MAX = 50;
const NAME_MAX = 200;
const TEXT_MAX = 2000;

export { ASSIGNMENT_STATES } from '../../engine/assignment-states.ts';

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

/** A rollout in a few words: what it rolls out, with which plan, and how far it is. */
export interface RolloutSummary {
  id: number;
  component: string;
  version: string;
  plan: string;
  status: string;
}

/** Offset paging: `next_offset` is null on the last page. */
export interface Page {
  total: number;
  limit: number;
  offset: number;
  next_offset: number | null;
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

export interface RolloutDevicesPage extends Page {
  rollout: RolloutSummary;
  /** Devices of the rollout per assignment state (whatever the filter). */
  states: Record<string, number>;
  devices: RolloutDeviceView[];
}

export interface HistoryRolloutRef extends RolloutSummary {
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

export interface DeviceHistoryPage extends Page {
  device: { id: string; name: string; labels: Record<string, string>; retired_at: number | null };
  transactions: HistoryEntry[];
  /** The device's place in its newest rollouts (at most 100), reported or not. */
  assignments: Array<HistoryRolloutRef & { offered_at: number | null; reported_at: number | null }>;
}

// ---- device-written detail, read defensively -----------------------------------------------------------------

function bounded(v: unknown, max = TEXT_MAX): string | null {
  if (typeof v !== 'string') return null;
  return v.length > max ? `${v.slice(0, max)}…` : v;
}

export function parseJson(text: string): unknown {
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

/** A row of the reports table as the device's report, with its checks. */
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
