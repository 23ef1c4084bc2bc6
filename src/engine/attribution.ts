// Attribution across rollouts (issue 16): when several rollouts touch overlapping devices and a signal turns bad,
// which rollout's exposure explains it? Like Azure's Gandalf, compare devices with and without each rollout's
// release, blame the one that explains the shift best, set its devices aside and look again: a rollout whose
// devices are only worse because many of them also took the guilty release is then cleared. Pure.
import { type CohortComparison, compareCohorts } from './cohort-stats.ts';

/** One rollout's exposure: the devices running its release. */
export interface RolloutExposure {
  rolloutId: string;
  /** For reasons: "rollout r-12 (os 5.1)". */
  label: string;
  exposed: ReadonlySet<string>;
}

export interface AttributionInput {
  /** One value of the signal per device of the population (treatment and control of the gate that fired). */
  values: ReadonlyMap<string, number>;
  badDirection: 'higher' | 'lower';
  /** The per-test confidence the gate uses (see evidence.ts testAlpha). */
  confidence: number;
  tolerance: number;
  minSamples: number;
  exposures: readonly RolloutExposure[];
}

export interface Attribution {
  rolloutId: string;
  label: string;
  /** Exposed against not exposed, among the devices left when it was judged. */
  comparison: CohortComparison;
}

/** Which rollouts are blamed (in the order found) and which are cleared, each with the evidence. */
export interface AttributionResult {
  blamed: Attribution[];
  cleared: Attribution[];
}

function judge(input: AttributionInput, e: RolloutExposure, pool: ReadonlySet<string>): CohortComparison {
  const treatment: number[] = [];
  const control: number[] = [];
  for (const id of pool) {
    const v = input.values.get(id) as number;
    (e.exposed.has(id) ? treatment : control).push(v);
  }
  return compareCohorts({
    treatment,
    control,
    badDirection: input.badDirection,
    confidence: input.confidence,
    tolerance: input.tolerance,
    minSamples: input.minSamples,
  });
}

/**
 * Greedy forward selection: judge every rollout not yet blamed on the devices left; blame the failing one with
 * the smallest p (then the largest effect, then the first given); drop its exposed devices; repeat until none
 * fails. Bounded by the number of rollouts.
 */
export function attribute(input: AttributionInput): AttributionResult {
  const pool = new Set(input.values.keys());
  const left = [...input.exposures];
  const blamed: Attribution[] = [];
  for (;;) {
    let best: Attribution | null = null;
    const judged: Attribution[] = [];
    for (const e of left) {
      const comparison = judge(input, e, pool);
      const a = { rolloutId: e.rolloutId, label: e.label, comparison };
      judged.push(a);
      if (comparison.verdict !== 'fail') continue;
      const p = comparison.p as number;
      const bp = best?.comparison.p as number;
      if (
        best === null ||
        p < bp ||
        (p === bp && (comparison.effect as number) > (best.comparison.effect as number))
      )
        best = a;
    }
    if (best === null) return { blamed, cleared: judged };
    blamed.push(best);
    const culprit = left.findIndex((e) => e.rolloutId === best.rolloutId);
    for (const id of left[culprit].exposed) pool.delete(id);
    left.splice(culprit, 1);
  }
}
