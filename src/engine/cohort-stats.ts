// Statistics for evidence-based gates (issue 16): compares a signal on devices that took a release (the
// treatment) with devices of the same wave still on the previous release (the control). Pure functions only:
// no I/O, no clock, no randomness, so a verdict can be recomputed from the recorded samples.

export type Alternative = 'greater' | 'less' | 'two-sided';
export type MwuMethod = 'auto' | 'exact' | 'asymptotic';

export interface MannWhitneyResult {
  /** U of the first sample (scipy's U1): the number of pairs (x, y) with x > y, ties counting one half. */
  u: number;
  p: number;
  method: 'exact' | 'asymptotic';
}

/** Larger cohorts are refused rather than sorted slowly inside a request. */
export const MAX_SAMPLE_SIZE = 1_000_000;
/** The exact null distribution costs about (n1·n2)²/4 steps, so it is computed only up to this n1·n2. */
export const EXACT_MAX_PRODUCT = 10_000;

/**
 * erfc by the Chebyshev fit of Numerical Recipes (Press et al., 2nd ed., §6.2, `erfcc`):
 * fractional error below 1.2e-7 everywhere (measured here against scipy.special.erfc: ≤ 1.05e-7 on [-6, 12]).
 * That is far finer than any confidence level a plan would use.
 */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const poly =
    -1.26551223 +
    t *
      (1.00002368 +
        t *
          (0.37409196 +
            t *
              (0.09678418 +
                t *
                  (-0.18628806 +
                    t *
                      (0.27886807 +
                        t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  const r = t * Math.exp(-z * z + poly);
  return x >= 0 ? r : 2 - r;
}

/** P(Z > z) for a standard normal Z. */
export function normalSf(z: number): number {
  if (z === Number.POSITIVE_INFINITY) return 0;
  if (z === Number.NEGATIVE_INFINITY) return 1;
  return 0.5 * erfc(z / Math.SQRT2);
}

function checkSample(name: string, s: readonly number[]): void {
  if (s.length === 0) throw new Error(`${name} is empty: a cohort needs at least one sample`);
  if (s.length > MAX_SAMPLE_SIZE)
    throw new Error(`${name} has ${s.length} samples; at most ${MAX_SAMPLE_SIZE} are accepted`);
  for (const v of s) {
    if (!Number.isFinite(v)) throw new Error(`${name} contains a non-finite value (${v})`);
  }
}

/** Midranks of x∪y: returns the rank sum of x and the sizes of the tie groups (scipy's `t`). */
function rankSumAndTies(x: readonly number[], y: readonly number[]): { r1: number; ties: number[] } {
  const n1 = x.length;
  const all = x.concat(y);
  const order = all.map((_, i) => i).sort((a, b) => all[a] - all[b]);
  let r1 = 0;
  const ties: number[] = [];
  let i = 0;
  while (i < order.length) {
    let j = i;
    while (j + 1 < order.length && all[order[j + 1]] === all[order[i]]) j++;
    const midrank = (i + j) / 2 + 1; // ranks are 1-based
    for (let k = i; k <= j; k++) if (order[k] < n1) r1 += midrank;
    ties.push(j - i + 1);
    i = j + 1;
  }
  return { r1, ties };
}

/**
 * Null distribution of U for sizes m, n (no ties), as probabilities. Recurrence on the largest element of the
 * merged sample: it is an x (adding n to U) with probability m/(m+n), else a y. Working in probabilities keeps
 * every term positive and below 1, so no overflow and no cancellation, unlike counting C(m+n, m) arrangements.
 */
function exactDistribution(m: number, n: number): Float64Array {
  let prev: Float64Array[] = []; // p_{i, j-1} for i = 0..m
  for (let i = 0; i <= m; i++) prev.push(Float64Array.of(1)); // j = 0: U is 0
  for (let j = 1; j <= n; j++) {
    const cur: Float64Array[] = [Float64Array.of(1)]; // i = 0: U is 0
    for (let i = 1; i <= m; i++) {
      const d = new Float64Array(i * j + 1);
      const fromX = cur[i - 1]; // support 0..(i-1)j
      const fromY = prev[i]; // support 0..i(j-1)
      const wx = i / (i + j);
      const wy = j / (i + j);
      for (let u = 0; u < d.length; u++) {
        const a = u >= j ? fromX[u - j] : 0;
        const b = u < fromY.length ? fromY[u] : 0;
        d[u] = wx * a + wy * b;
      }
      cur.push(d);
    }
    prev = cur;
  }
  return prev[m];
}

/** P(U ≥ u) under the null, as scipy's `_MWU.sf`: the mass at u is included. */
function exactSf(n1: number, n2: number, u: number): number {
  const m = Math.min(n1, n2);
  const n = Math.max(n1, n2);
  const dist = exactDistribution(m, n);
  const k = Math.floor(u);
  if (k <= 0) return 1;
  if (k >= (m * n) / 2) {
    // The upper tail is the small side: add it directly, smallest terms first.
    let s = 0;
    for (let v = dist.length - 1; v >= k; v--) s += dist[v];
    return s;
  }
  let below = 0;
  for (let v = 0; v < k; v++) below += dist[v];
  return 1 - below;
}

/**
 * Mann–Whitney U test with scipy.stats.mannwhitneyu semantics (scipy 1.17, use_continuity=True).
 * 'auto' follows scipy's `_mwu_choose_method` (exact when one sample has at most 8 values and there are no
 * ties) with one deviation: above EXACT_MAX_PRODUCT (n1·n2) it uses the normal approximation, where scipy
 * would still count the exact distribution, slowly.
 */
export function mannWhitneyU(
  x: readonly number[],
  y: readonly number[],
  alternative: Alternative,
  method: MwuMethod = 'auto',
): MannWhitneyResult {
  checkSample('first sample', x);
  checkSample('second sample', y);
  const n1 = x.length;
  const n2 = y.length;
  const { r1, ties } = rankSumAndTies(x, y);
  const u1 = r1 - (n1 * (n1 + 1)) / 2;
  const u2 = n1 * n2 - u1;
  // As scipy: always an upper-tail probability; 'less' uses U2 by symmetry, two-sided doubles the larger tail.
  const u = alternative === 'greater' ? u1 : alternative === 'less' ? u2 : Math.max(u1, u2);
  const factor = alternative === 'two-sided' ? 2 : 1;

  let chosen: 'exact' | 'asymptotic';
  if (method === 'auto') {
    const hasTies = ties.some((t) => t > 1);
    chosen = (n1 > 8 && n2 > 8) || hasTies || n1 * n2 > EXACT_MAX_PRODUCT ? 'asymptotic' : 'exact';
  } else {
    chosen = method;
  }

  let p: number;
  if (chosen === 'exact') {
    if (n1 * n2 > EXACT_MAX_PRODUCT) {
      throw new Error(
        `exact method supports n1·n2 ≤ ${EXACT_MAX_PRODUCT} (got ${n1 * n2}); use 'asymptotic'`,
      );
    }
    p = exactSf(n1, n2, u); // like scipy, not corrected for ties
  } else {
    const n = n1 + n2;
    let tieTerm = 0;
    for (const t of ties) tieTerm += t ** 3 - t;
    const variance = n > 1 ? ((n1 * n2) / 12) * (n + 1 - tieTerm / (n * (n - 1))) : 0;
    const numerator = u - (n1 * n2) / 2 - 0.5; // continuity correction, always towards the null
    // Every value tied: no spread, and the numerator is -0.5, so z is -∞ and p is 1 (as scipy).
    const z = variance > 0 ? numerator / Math.sqrt(variance) : Number.NEGATIVE_INFINITY;
    p = normalSf(z);
  }
  p = Math.min(1, Math.max(0, p * factor));
  return { u: u1, p, method: chosen };
}

export interface EffectSize {
  /** Probability of superiority A = U1/(n1·n2): P(x > y) + ½·P(x = y). 0.5 means no shift. */
  probabilityOfSuperiority: number;
  /** Cliff's delta = 2A − 1, in [-1, 1]: positive when the first sample tends to be larger. */
  cliffsDelta: number;
}

export function effectSize(u1: number, n1: number, n2: number): EffectSize {
  const a = u1 / (n1 * n2);
  return { probabilityOfSuperiority: a, cliffsDelta: 2 * a - 1 };
}

export type CohortVerdict = 'pass' | 'marginal' | 'fail' | 'inconclusive';

export interface CohortComparisonInput {
  treatment: readonly number[];
  control: readonly number[];
  /** Which way of the signal is harm: 'higher' for error counts or latency, 'lower' for throughput. */
  badDirection: 'higher' | 'lower';
  /** For example 0.98: a significant result needs p < 1 − confidence. */
  confidence: number;
  /** The smallest shift that matters, as Cliff's delta in the bad direction, in [0, 1). */
  tolerance: number;
  /** Below this many samples in either cohort the verdict is inconclusive, never a pass. */
  minSamples: number;
}

export interface CohortComparison {
  verdict: CohortVerdict;
  u: number | null;
  p: number | null;
  /** Cliff's delta of treatment over control, signed so that positive is the bad direction. */
  effect: number | null;
  n_treatment: number;
  n_control: number;
  reason: string;
}

/**
 * The verdict rule, with α = 1 − confidence and `effect` = Cliff's delta in the bad direction:
 *   inconclusive  either cohort has fewer than minSamples samples;
 *   fail          p < α and effect > tolerance (significant and large enough to matter);
 *   marginal      p < α but effect ≤ tolerance (real but small), or α ≤ p < 2α and effect > tolerance
 *                 (large but not yet certain): extend the bake or ask for approval;
 *   pass          otherwise.
 * Tolerance is a Cliff's delta rather than a relative shift of the mean because it is defined for any signal,
 * including counts that are mostly zero, and it is the same scale as the rank test itself.
 */
export function compareCohorts(input: CohortComparisonInput): CohortComparison {
  const { treatment, control, badDirection, confidence, tolerance, minSamples } = input;
  if (!(confidence > 0 && confidence < 1)) throw new Error(`confidence must be in (0, 1), got ${confidence}`);
  if (!(tolerance >= 0 && tolerance < 1))
    throw new Error(`tolerance must be a Cliff's delta in [0, 1), got ${tolerance}`);
  if (!Number.isInteger(minSamples) || minSamples < 1)
    throw new Error(`minSamples must be a positive integer, got ${minSamples}`);
  const nT = treatment.length;
  const nC = control.length;
  if (nT < minSamples || nC < minSamples) {
    return {
      verdict: 'inconclusive',
      u: null,
      p: null,
      effect: null,
      n_treatment: nT,
      n_control: nC,
      reason: `too few samples: treatment ${nT}, control ${nC}, need ${minSamples} each`,
    };
  }
  const alternative = badDirection === 'higher' ? 'greater' : 'less';
  const { u, p } = mannWhitneyU(treatment, control, alternative);
  const delta = effectSize(u, nT, nC).cliffsDelta;
  const effect = badDirection === 'higher' ? delta : -delta;
  const alpha = 1 - confidence;
  const big = effect > tolerance;
  const fmt = (v: number) => v.toPrecision(3);
  const stats = `p=${fmt(p)} (α=${fmt(alpha)}), effect=${fmt(effect)} (tolerance ${tolerance})`;
  let verdict: CohortVerdict;
  let why: string;
  if (p < alpha && big) {
    verdict = 'fail';
    why = `treatment is worse (${badDirection} is bad) beyond tolerance`;
  } else if (p < alpha) {
    verdict = 'marginal';
    why = 'treatment is significantly worse but within tolerance';
  } else if (p < 2 * alpha && big) {
    verdict = 'marginal';
    why = 'effect beyond tolerance but not yet significant';
  } else {
    verdict = 'pass';
    why = 'no significant harm beyond tolerance';
  }
  return { verdict, u, p, effect, n_treatment: nT, n_control: nC, reason: `${why}: ${stats}` };
}
