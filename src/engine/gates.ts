// A wave's gates, judged over its assignments: the failure budget (checked all along, for every started
// wave), the success gate and the evidence (min_reported) gate (checked when the wave has settled).

import { selectedOf, type WaveTally } from './assignment-index.ts';
import { resolveAmount, type WaveSpec } from './plan.ts';
import { type Assignment, isRetryableFailure } from './rollout-state.ts';

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
