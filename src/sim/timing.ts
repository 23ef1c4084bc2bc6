// The rehearsal's timing model: how long a simulated device takes from an offer to its report, and whether
// the plan gives it enough time. A device sees an offer at its next check-in (0 … one check-in interval after
// the offer), downloads, stages and switches (apply time), runs its health checks through probation (health
// time), and reports at once (the agent checks in again right after a transaction). A plan whose
// `report_deadline` is shorter than that makes healthy devices count as failed: the rehearsal warns about it.
import { formatDuration } from '../engine/duration.ts';
import type { Plan } from '../engine/plan.ts';

/** Where a figure of the model came from, shown in the report so nobody mistakes an assumption for a fact. */
export type TimingSource = 'flag' | 'agent-config' | 'plan' | 'server-default';

export interface TimingModel {
  /** Device check-in interval: an offer waits up to this long to be seen. */
  pollMs: number;
  /** Download + stage + switch, uniform in [min, max]. */
  applyMs: [number, number];
  /** Probation: health checks after the switch, before the device commits (or rolls back) and reports. */
  healthMs: number;
  /** How soon the control plane reacts to news (the server steps on reports within a fraction of a second). */
  tickMs: number;
  sources: { poll: TimingSource; apply: TimingSource; health: TimingSource; tick: TimingSource };
}

export interface TimingOverrides {
  pollMs?: number;
  applyMs?: [number, number];
  healthMs?: number;
  tickMs?: number;
  /** Figures read from a device's agent configuration (`--agent-config`); flags still win. */
  agent?: { pollMs?: number; healthMs?: number };
}

/** The server's default `poll_seconds` (src/server/config.ts): what agents use unless told otherwise. */
export const SERVER_DEFAULT_POLL_MS = 30_000;

/** The shortest `report_deadline` of any wave: device timings must fit inside it everywhere. */
export function shortestDeadline(plan: Plan): number {
  return Math.min(...plan.waves.map((w) => w.reportDeadlineMs));
}

/**
 * Resolves the model: flags win, then the agent configuration, then defaults. The check-in interval defaults
 * to the server's default (30 s); apply and health time default to figures that fit the plan's shortest
 * deadline (apply 10–20 % of it, at most 1–3 min; health a quarter of it, at most 5 min), because without
 * figures from the devices the honest assumption is a fleet the plan was written for. Pass `--health-time`,
 * `--apply-time` or `--agent-config` to rehearse the devices you really have.
 */
export function resolveTiming(plan: Plan, o: TimingOverrides = {}): TimingModel {
  const d = shortestDeadline(plan);
  const poll = o.pollMs ?? o.agent?.pollMs;
  const health = o.healthMs ?? o.agent?.healthMs;
  const apply: [number, number] = o.applyMs ?? [
    Math.max(1000, Math.min(60_000, Math.round(d / 10))),
    Math.max(1000, Math.min(180_000, Math.round(d / 5))),
  ];
  return {
    pollMs: Math.max(1, poll ?? SERVER_DEFAULT_POLL_MS),
    applyMs: [Math.max(0, apply[0]), Math.max(apply[0], apply[1])],
    healthMs: Math.max(0, health ?? Math.max(1000, Math.min(300_000, Math.round(d / 4)))),
    // Fine enough that a wave of a lab plan is not rounded up to whole minutes; coarse for long plans (speed).
    tickMs: Math.max(1, o.tickMs ?? Math.max(1000, Math.min(60_000, Math.round(d / 8)))),
    sources: {
      poll:
        o.pollMs !== undefined ? 'flag' : o.agent?.pollMs !== undefined ? 'agent-config' : 'server-default',
      apply: o.applyMs ? 'flag' : 'plan',
      health: o.healthMs !== undefined ? 'flag' : o.agent?.healthMs !== undefined ? 'agent-config' : 'plan',
      tick: o.tickMs !== undefined ? 'flag' : 'plan',
    },
  };
}

/** The longest a healthy device takes from an offer to its report under the model. */
export function timeToReport(t: TimingModel): number {
  return t.pollMs + t.applyMs[1] + t.healthMs;
}

export interface TimingWarning {
  wave: string;
  report_deadline_ms: number;
  time_to_report_ms: number;
  poll_ms: number;
  apply_ms: number;
  health_ms: number;
  message: string;
}

/** One warning per wave whose `report_deadline` is shorter than the modelled time to report. */
export function timingWarnings(plan: Plan, t: TimingModel): TimingWarning[] {
  const need = timeToReport(t);
  const out: TimingWarning[] = [];
  for (const w of plan.waves) {
    if (w.reportDeadlineMs >= need) continue;
    out.push({
      wave: w.name,
      report_deadline_ms: w.reportDeadlineMs,
      time_to_report_ms: need,
      poll_ms: t.pollMs,
      apply_ms: t.applyMs[1],
      health_ms: t.healthMs,
      message:
        `wave ${w.name}: report_deadline ${formatDuration(w.reportDeadlineMs)} is shorter than the modelled time ` +
        `to report, ${formatDuration(need)} (check-in every ${formatDuration(t.pollMs)} + apply up to ` +
        `${formatDuration(t.applyMs[1])} + health ${formatDuration(t.healthMs)}): healthy devices may miss it ` +
        'and count as failed',
    });
  }
  return out;
}

/** One line describing the model and where each figure came from. */
export function describeTiming(t: TimingModel): string {
  const [a, b] = t.applyMs;
  return (
    `device model: check-in every ${formatDuration(t.pollMs)} (${t.sources.poll}), ` +
    `apply ${a === b ? formatDuration(a) : `${formatDuration(a)}–${formatDuration(b)}`} (${t.sources.apply}), ` +
    `health ${formatDuration(t.healthMs)} (${t.sources.health}); ` +
    `time to report up to ${formatDuration(timeToReport(t))}`
  );
}
