// The operator's view of a rollout: its engine state plus per-wave counts of what the devices did.
import { signalNumbers } from '../../engine/evidence.ts';
import type { Plan } from '../../engine/plan.ts';
import type {
  AssignmentState,
  DeviceOutcome,
  RolloutState,
  RolloutStatus,
} from '../../engine/rollout-state.ts';
import type { Governance } from '../config.ts';
import { assignmentCounts } from '../db/assignments.ts';
import type { Db } from '../db/database.ts';
import { type Channel, findRollout, listRolloutIds } from '../db/rollouts.ts';
import { notFound } from '../errors.ts';
import { type AwaitingApproval, waveAwaiting } from './rollout-rules.ts';

export interface RolloutView {
  id: number;
  component: string;
  version: string;
  plan: string;
  channel: Channel | null;
  status: RolloutStatus;
  wave: string | null;
  wave_index: number;
  waves: WaveCounts[];
  exposed: number;
  state: RolloutState;
  created_at: number;
  updated_at: number;
  /** Who started it (null: started before four eyes). */
  started_by: string | null;
  /** While a wave waits for approval: which, and who may not approve it (four eyes); else null. */
  awaiting_approval: AwaitingApproval | null;
  /** Every metric gate of the plan, with its last result in this rollout (`pending`: none yet). */
  metric_gates: MetricGateView[];
  /** Evidence gates: each signal of each wave's latest look (docs/evidence-gates.md). */
  evidence: EvidenceView[];
}

/** One signal of a wave's latest evidence-gate look. */
export interface EvidenceView {
  wave: string;
  look: number;
  at: number;
  final: boolean;
  /** The wave's verdict in that look; `signal_verdict` is this signal's. */
  verdict: string;
  signal: string;
  signal_verdict: string;
  critical: boolean;
  u: number | null;
  p: number | null;
  effect: number | null;
  n_treatment: number;
  n_control: number;
  attributed_to: string | null;
  reason: string;
}

/** Pure: the rollout's latest look per wave, one row per signal. */
export function evidenceViews(plan: Plan, state: RolloutState): EvidenceView[] {
  return (state.evidence ?? []).flatMap((e) =>
    e.signals.map((s) => ({
      wave: plan.waves[e.wave]?.name ?? String(e.wave),
      look: e.look,
      at: e.at,
      final: e.final,
      verdict: e.verdict,
      ...signalNumbers(s),
      signal_verdict: s.verdict,
      reason: s.reason,
    })),
  );
}

/** A metric gate as the status shows it; the condition `value <comparison> threshold` must hold. */
export interface MetricGateView {
  wave: string;
  name: string;
  query: string;
  comparison: '<' | '<=' | '>' | '>=';
  threshold: number;
  last_value: number | null;
  last_at: number | null;
  /** Why the last evaluation gave no value (unreachable, no series, …); null otherwise. */
  last_error: string | null;
  state: 'ok' | 'breached' | 'inconclusive' | 'pending';
}

/** Pure: the plan's metric gates with the rollout's last result of each. */
export function metricGateViews(plan: Plan, state: RolloutState): MetricGateView[] {
  return plan.waves.flatMap((w, i) =>
    (w.metrics ?? []).map((g) => {
      const r = state.metricGates?.find((k) => k.wave === i && k.name === g.name);
      return {
        wave: w.name,
        name: g.name,
        query: g.query,
        comparison: g.comparison,
        threshold: g.threshold,
        last_value: r?.value ?? null,
        last_at: r?.at ?? null,
        last_error: r?.error ?? null,
        state: r?.state ?? 'pending',
      };
    }),
  );
}

/**
 * One wave's counts. Each means one thing and never goes down as the rollout moves on (a revert does not turn a
 * failure into something else): `offered` devices were sent the release; of those, `succeeded`, `failed` (the
 * device reported a failure or a refusal, or did not report before the deadline; including `rolled_back`) and
 * `rolled_back` (the device undid it by itself) are the devices' own verdicts; `reverted` were put back by the
 * rollout and confirmed; `unconfirmed` were told to revert and did not confirm before the deadline; `skipped`
 * were selected but never offered.
 */
export interface WaveCounts {
  name: string;
  selected: number;
  offered: number;
  succeeded: number;
  failed: number;
  rolled_back: number;
  reverted: number;
  unconfirmed: number;
  skipped: number;
}

/** Assignments grouped by wave, state and outcome: how many, and how many were ever offered. */
export interface AssignmentCount {
  wave: number;
  state: AssignmentState;
  outcome: DeviceOutcome | null;
  n: number;
  offered: number;
}

/** Pure: the per-wave counts of a plan from grouped assignment counts; also the total ever offered. */
export function waveCounts(plan: Plan, counts: AssignmentCount[]): { waves: WaveCounts[]; exposed: number } {
  const waves: WaveCounts[] = plan.waves.map((w) => ({
    name: w.name,
    selected: 0,
    offered: 0,
    succeeded: 0,
    failed: 0,
    rolled_back: 0,
    reverted: 0,
    unconfirmed: 0,
    skipped: 0,
  }));
  let exposed = 0;
  for (const c of counts) {
    const w = waves[c.wave];
    if (!w) continue;
    const { n, offered } = c;
    w.offered += offered;
    exposed += offered;
    // A skipped device that was offered before (retired, or left to a newer rollout) was selected.
    const neverOffered = c.state === 'skipped' ? n - offered : 0;
    w.skipped += neverOffered;
    w.selected += n - neverOffered;
    if (c.outcome === 'succeeded') w.succeeded += n;
    if (c.outcome === 'failed' || c.outcome === 'rolled-back') w.failed += n;
    if (c.outcome === 'rolled-back') w.rolled_back += n;
    if (c.state === 'reverted' && c.outcome !== 'rolled-back' && c.outcome !== 'failed') w.reverted += n;
    if (c.state === 'unconfirmed') w.unconfirmed += n;
  }
  return { waves, exposed };
}

/** Builds the operator's view of a rollout (404 when there is none); `governance` decides `awaiting_approval`. */
export async function rolloutView(db: Db, id: number, governance?: Governance): Promise<RolloutView> {
  const ro = await findRollout(db, id);
  if (!ro) throw notFound(`no rollout ${id}`);
  const { waves, exposed } = waveCounts(ro.plan, await assignmentCounts(db, id));
  const state = ro.state;
  return {
    id,
    component: ro.component,
    version: ro.version,
    plan: ro.planName,
    channel: ro.channel,
    status: ro.status,
    wave: state.wave >= 0 ? ro.plan.waves[state.wave].name : null,
    wave_index: state.wave,
    waves,
    exposed,
    state,
    created_at: ro.createdAt,
    updated_at: ro.updatedAt,
    started_by: ro.startedBy,
    awaiting_approval: waveAwaiting(
      {
        id,
        status: ro.status,
        nextWave: ro.plan.waves[state.wave + 1]?.name ?? null,
        startedBy: ro.startedBy,
      },
      (governance?.fourEyes ?? true) && ro.plan.fourEyes !== false,
    ),
    metric_gates: metricGateViews(ro.plan, state),
    evidence: evidenceViews(ro.plan, state),
  };
}

/** Every rollout's view, oldest first. */
export async function rolloutViews(db: Db, governance?: Governance): Promise<RolloutView[]> {
  return Promise.all((await listRolloutIds(db)).map((id) => rolloutView(db, id, governance)));
}
