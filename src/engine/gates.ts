// A wave's gates, judged over its assignments: the failure budget (checked all along, for every started
// wave), the success gate and the evidence (min_reported) gate (checked when the wave has settled).

import { selectedOf, type WaveTally } from './assignment-index.ts';
import { type MetricGateSpec, resolveAmount, type WaveSpec } from './plan.ts';
import { type Assignment, isRetryableFailure, type MetricGateResult } from './rollout-state.ts';

function failureBudgetExceeded(wave: WaveSpec, failed: number, selected: number): boolean {
  if ('count' in wave.maxFailures) return failed > wave.maxFailures.count;
  return selected > 0 && (failed * 100) / selected > wave.maxFailures.percent;
}

/**
 * Why the rollout must halt because a started wave's failures exceed its budget, or null. Earlier waves
 * count too: a device of a passed wave that turns unhealthy later is still a bad sign about the release.
 */
export function overFailureBudget(
  waves: readonly WaveSpec[],
  current: number,
  tally: (wave: number) => WaveTally,
): string | null {
  for (let w = 0; w <= current; w++) {
    const t = tally(w);
    const selected = selectedOf(t);
    if (failureBudgetExceeded(waves[w], t.failed, selected))
      return `wave ${waves[w].name}: ${t.failed} of ${selected} devices failed, over the failure budget`;
  }
  return null;
}

/**
 * Whether retrying could pass: false when the real (non-transient) failures alone exceed a wave's budget.
 * Retried devices (transient failures of devices still in the fleet) move to the current wave.
 */
export function retryWithinBudget(
  waves: readonly WaveSpec[],
  current: number,
  assignments: Iterable<Assignment>,
  inFleet: (deviceId: string) => boolean,
): boolean {
  const failed = new Array<number>(current + 1).fill(0);
  const selected = new Array<number>(current + 1).fill(0);
  for (const a of assignments) {
    if (a.wave < 0 || a.wave > current || a.state === 'skipped') continue;
    const retried = a.state === 'failed' && isRetryableFailure(a) && inFleet(a.deviceId);
    const w = retried ? current : a.wave;
    selected[w]++;
    if (a.state === 'failed' && !retried) failed[w]++;
  }
  for (let w = 0; w <= current; w++)
    if (failureBudgetExceeded(waves[w], failed[w], selected[w])) return false;
  return true;
}

/**
 * The settled wave's verdict. `inconclusive`: too little evidence to judge, so stop exposure but do not
 * roll back what may be healthy; `failed`: below the success gate, handled like any failure.
 */
export type WaveVerdict = { kind: 'passed' } | { kind: 'inconclusive' | 'failed'; why: string };

export function judgeWave(wave: WaveSpec, t: WaveTally): WaveVerdict {
  const selected = selectedOf(t);
  const succeeded = t.succeeded;
  const reported = t.succeeded + t.failedReported;
  const need = resolveAmount(wave.minReported ?? { count: 0 }, selected);
  if (reported < need)
    return {
      kind: 'inconclusive',
      why: `wave ${wave.name}: inconclusive, ${reported} of ${selected} devices reported (min_reported ${need})`,
    };
  if (selected > 0 && (succeeded * 100) / selected < wave.minSuccessPercent)
    return {
      kind: 'failed',
      why: `wave ${wave.name}: ${succeeded} of ${selected} succeeded, below the ${wave.minSuccessPercent}% gate`,
    };
  return { kind: 'passed' };
}

/** Whether a metric gate's condition holds for `value` (the condition is what must hold, e.g. `< 0.05`). */
export function metricHolds(g: Pick<MetricGateSpec, 'comparison' | 'threshold'>, value: number): boolean {
  switch (g.comparison) {
    case '<':
      return value < g.threshold;
    case '<=':
      return value <= g.threshold;
    case '>':
      return value > g.threshold;
    case '>=':
      return value >= g.threshold;
  }
}

/** Results kept in a rollout's state: at most one per gate of a wave, and only the latest waves' past this. */
export const METRIC_RESULTS_KEPT = 50;

/**
 * A metric result judged: `breached` when the value violates the condition, `inconclusive` when there is no
 * value; with the reason naming the gate, query, value and threshold (audit entry and status show it).
 */
export function judgeMetric(
  wave: WaveSpec,
  g: MetricGateSpec,
  value: number | null,
  error: string | undefined,
): { state: MetricGateResult['state']; why: string } {
  const cond = `${g.comparison} ${g.threshold}`;
  if (value === null)
    return {
      state: 'inconclusive',
      why: `wave ${wave.name}: metric gate ${g.name} inconclusive, query ${JSON.stringify(g.query)} could not be evaluated (${error ?? 'no value'}); must be ${cond}`,
    };
  if (metricHolds(g, value)) return { state: 'ok', why: '' };
  return {
    state: 'breached',
    why: `wave ${wave.name}: metric gate ${g.name} breached, query ${JSON.stringify(g.query)} = ${value}, must be ${cond}`,
  };
}

/** Keeps `r` as its gate's last result, bounded (the oldest waves' results go first). */
export function keepMetricResult(
  kept: readonly MetricGateResult[] | undefined,
  r: MetricGateResult,
): MetricGateResult[] {
  const next = (kept ?? []).filter((k) => !(k.wave === r.wave && k.name === r.name));
  next.push(r);
  next.sort((a, b) => a.wave - b.wave || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return next.length > METRIC_RESULTS_KEPT ? next.slice(next.length - METRIC_RESULTS_KEPT) : next;
}

/**
 * A gate of the current wave with no result for too long while it bakes (3 intervals since the later of the
 * bake's start and its last result), or with none at all when the bake ends: a dead Prometheus must not let a
 * wave sail through. Returns why, or null; and the next instant to look again.
 */
export function staleMetricGate(
  wave: WaveSpec,
  waveIndex: number,
  kept: readonly MetricGateResult[] | undefined,
  bakeStartedAt: number,
  waveStartedAt: number,
  bakeOver: boolean,
  now: number,
): { why: string | null; wakeAt: number | null } {
  let wakeAt: number | null = null;
  for (const g of wave.metrics ?? []) {
    const last = kept?.find((k) => k.wave === waveIndex && k.name === g.name && k.at >= waveStartedAt);
    if (bakeOver && !last)
      return {
        why: `wave ${wave.name}: metric gate ${g.name} inconclusive, no result for query ${JSON.stringify(g.query)} before the bake ended`,
        wakeAt: null,
      };
    const due = Math.max(bakeStartedAt, last?.at ?? bakeStartedAt) + 3 * g.intervalMs;
    if (now >= due)
      return {
        why: `wave ${wave.name}: metric gate ${g.name} inconclusive, no result for query ${JSON.stringify(g.query)} in 3 intervals`,
        wakeAt: null,
      };
    if (wakeAt === null || due < wakeAt) wakeAt = due;
  }
  return { why: null, wakeAt };
}
