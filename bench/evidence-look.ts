// What one evidence-gate look costs the server's event loop (docs/performance.md, "Evidence gates: cost of a
// look"): judging one signal over a treatment and a control of n devices each, and attributing it across two
// overlapping rollouts, with the same pure functions the evaluator runs. Run: npx tsx bench/evidence-look.ts
import { attribute } from '../src/engine/attribution.ts';
import { judgeEvidence } from '../src/engine/evidence.ts';
import type { CompareSpec } from '../src/engine/plan.ts';

const spec: CompareSpec = {
  confidence: 0.98,
  minSamples: 30,
  looks: 1,
  onFail: 'halt',
  onMarginal: 'extend',
  extendMs: 0,
  signals: [{ name: 'restarts', bad: 'higher', tolerance: 0, critical: true }],
};

/** Median of three timings of `fn`, in ms. */
function time(fn: () => void): number {
  const t: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    fn();
    t.push(performance.now() - start);
  }
  return t.sort((a, b) => a - b)[1];
}

for (const n of [10_000, 100_000, 250_000]) {
  // Small counts with many ties, like restarts per device.
  const treatment = Array.from({ length: n }, (_, i) => (i * 7919) % 13);
  const control = Array.from({ length: n }, (_, i) => (i * 104729) % 13);
  const judge = time(() => judgeEvidence(spec, new Map([['restarts', { treatment, control }]])));
  const values = new Map<string, number>();
  const a = new Set<string>();
  const b = new Set<string>();
  for (let i = 0; i < 2 * n; i++) {
    values.set(`d${i}`, i < n ? treatment[i] : control[i - n]);
    if (i % 2 === 0) a.add(`d${i}`);
    if (i % 3 === 0) b.add(`d${i}`);
  }
  const attribution = time(() =>
    attribute({
      values,
      badDirection: 'higher',
      confidence: 0.99,
      tolerance: 0,
      minSamples: 30,
      exposures: [
        { rolloutId: 'a', label: 'a', exposed: a },
        { rolloutId: 'b', label: 'b', exposed: b },
      ],
    }),
  );
  console.log(
    `${n} + ${n} devices: one signal judged in ${judge.toFixed(0)} ms; attributed across 2 rollouts in ${attribution.toFixed(0)} ms`,
  );
}
