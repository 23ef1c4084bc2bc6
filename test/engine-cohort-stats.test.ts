// The statistics of evidence-based gates (issue 16) against scipy 1.17.1 reference values, plus seeded
// simulations: a release identical to its control fails no more often than the false-positive rate, and a
// doubled fault rate is caught.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  compareCohorts,
  EXACT_MAX_PRODUCT,
  effectSize,
  erfc,
  mannWhitneyU,
  normalSf,
} from '../src/engine/cohort-stats.ts';
import { createRng, type Rng } from '../src/sim/prng.ts';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/*
 Reference values: python3, scipy 1.17.1, each line `scipy.stats.mannwhitneyu(x, y, alternative=ALT)`
 (use_continuity=True, method='auto'), printing float(res.statistic) and repr(float(res.pvalue)):
   from scipy.stats import mannwhitneyu as m; R = range
   m([3.1,5.2,7.7,9.0,4.4], [1.0,2.5,3.3,6.1,0.7,2.2], alternative='greater')
   m([(i*7)%11 for i in R(50)], [(i*5+3)%9 for i in R(50)], alternative='greater')
   m([(i*7919)%1009/1000 for i in R(200)], [(i*104729)%1013/1000+0.05 for i in R(200)], alternative='greater')
 and likewise for the other rows below; the generated samples are rebuilt here with the same integer formulas.
*/
interface RefCase {
  name: string;
  x: number[];
  y: number[];
  alt: 'greater' | 'less' | 'two-sided';
  method: 'exact' | 'asymptotic';
  u: number;
  p: number;
}
const cases: RefCase[] = [
  {
    name: 'small, no ties, greater',
    x: [3.1, 5.2, 7.7, 9.0, 4.4],
    y: [1.0, 2.5, 3.3, 6.1, 0.7, 2.2],
    alt: 'greater',
    method: 'exact',
    u: 26,
    p: 0.025974025974025976,
  },
  {
    name: 'small, no ties, less',
    x: [1.2, 0.4, 2.9, 3.8],
    y: [2.0, 4.5, 5.1, 6.6, 7.3, 8.8, 3.0],
    alt: 'less',
    method: 'exact',
    u: 3,
    p: 0.02121212121212121,
  },
  {
    name: 'small, no ties, two-sided',
    x: [19, 22, 16, 29, 24],
    y: [20, 11, 17, 12],
    alt: 'two-sided',
    method: 'exact',
    u: 17,
    p: 0.1111111111111111,
  },
  {
    name: 'complete separation, 8 vs 8, exact',
    x: [10, 11, 12, 13, 14, 15, 16, 17],
    y: [1, 2, 3, 4, 5, 6, 7, 8],
    alt: 'greater',
    method: 'exact',
    u: 64,
    p: 7.77000777000777e-5,
  },
  {
    name: '3 vs 40, no ties, exact (one sample ≤ 8)',
    x: [0.5, 2.5, 4.5],
    y: range(40).map((i) => i + 0.25),
    alt: 'less',
    method: 'exact',
    u: 9,
    p: 0.004294627663884613,
  },
  {
    name: 'small with ties, greater',
    x: [1, 2, 2, 3, 5],
    y: [2, 2, 1, 0, 1, 4],
    alt: 'greater',
    method: 'asymptotic',
    u: 21,
    p: 0.1497004350339176,
  },
  {
    name: 'small with ties, two-sided',
    x: [0, 0, 1, 1, 2],
    y: [0, 1, 1, 1, 3, 3],
    alt: 'two-sided',
    method: 'asymptotic',
    u: 10,
    p: 0.3828474934989071,
  },
  {
    name: 'identical samples',
    x: [4, 4, 4, 4, 4],
    y: [4, 4, 4, 4, 4, 4],
    alt: 'two-sided',
    method: 'asymptotic',
    u: 15,
    p: 1.0,
  },
  {
    name: 'n=50 with ties, greater',
    x: range(50).map((i) => (i * 7) % 11),
    y: range(50).map((i) => (i * 5 + 3) % 9),
    alt: 'greater',
    method: 'asymptotic',
    u: 1463.5,
    p: 0.0700532755618702,
  },
  {
    name: 'n=50 with ties, two-sided',
    x: range(50).map((i) => (i * i) % 13),
    y: range(50).map((i) => (i * 3 + 1) % 12),
    alt: 'two-sided',
    method: 'asymptotic',
    u: 1342,
    p: 0.5224636655715391,
  },
  {
    name: 'n=200 with ties, less',
    x: range(200).map((i) => Math.floor(((i * 13) % 29) / 3)),
    y: range(200).map((i) => Math.floor(((i * 17 + 5) % 31) / 3)),
    alt: 'less',
    method: 'asymptotic',
    u: 18920.5,
    p: 0.17417149747495397,
  },
  {
    name: 'n=200 continuous, greater',
    x: range(200).map((i) => ((i * 7919) % 1009) / 1000),
    y: range(200).map((i) => ((i * 104729) % 1013) / 1000 + 0.05),
    alt: 'greater',
    method: 'asymptotic',
    u: 18197,
    p: 0.9406117734880973,
  },
];

describe('mannWhitneyU against scipy 1.17.1', () => {
  for (const c of cases) {
    it(c.name, () => {
      const r = mannWhitneyU(c.x, c.y, c.alt);
      assert.equal(r.method, c.method);
      assert.equal(r.u, c.u);
      // Exact p-values are sums of the exact null distribution: only rounding error. Asymptotic ones go through
      // the erfc approximation (relative error < 1.2e-7), so 1e-6 relative-or-absolute.
      const tol = c.method === 'exact' ? 1e-12 : 1e-6;
      const err = Math.abs(r.p - c.p);
      assert.ok(err <= tol || err <= tol * c.p, `p=${r.p}, scipy ${c.p}, error ${err}`);
    });
  }

  it("method 'auto' switches to asymptotic when both samples exceed 8 (9 vs 9, no ties)", () => {
    const r = mannWhitneyU(
      range(9),
      range(9).map((i) => i + 0.5),
      'less',
    );
    assert.equal(r.method, 'asymptotic');
    assert.equal(
      mannWhitneyU(
        range(8),
        range(9).map((i) => i + 0.5),
        'less',
      ).method,
      'exact',
    );
  });

  it('exact and asymptotic agree roughly for moderate samples without ties', () => {
    const x = range(30).map((i) => ((i * 37) % 101) + 0.5);
    const y = range(30).map((i) => (i * 53) % 97);
    const e = mannWhitneyU(x, y, 'two-sided', 'exact');
    const a = mannWhitneyU(x, y, 'two-sided', 'asymptotic');
    assert.equal(e.u, a.u);
    assert.ok(Math.abs(e.p - a.p) < 0.01, `exact ${e.p} vs asymptotic ${a.p}`);
  });

  it('erfc and the normal tail match published values', () => {
    // scipy.special.erfc(0.5) = 0.4795001221869535, erfc(-1) = 1.8427007929497148, erfc(3) = 2.209049699858544e-05
    for (const [x, ref] of [
      [0.5, 0.4795001221869535],
      [-1, 1.8427007929497148],
      [3, 2.209049699858544e-5],
    ]) {
      assert.ok(Math.abs(erfc(x) - ref) / ref < 1.2e-7, `erfc(${x})`);
    }
    // scipy.stats.norm.sf(2.0537489) ≈ 0.02 (the one-sided 98 % quantile)
    assert.ok(Math.abs(normalSf(2.0537489) - 0.02) < 1e-8);
    assert.equal(normalSf(Number.POSITIVE_INFINITY), 0);
  });

  it('rejects empty, non-finite and oversized samples, and exact beyond its limit', () => {
    assert.throws(() => mannWhitneyU([], [1], 'greater'), /empty/);
    assert.throws(() => mannWhitneyU([1, Number.NaN], [1], 'greater'), /non-finite/);
    assert.throws(() => mannWhitneyU([1], [Number.POSITIVE_INFINITY], 'less'), /non-finite/);
    assert.throws(() => mannWhitneyU(new Array(1_000_001).fill(0), [1], 'less'), /at most 1000000/);
    const big = range(EXACT_MAX_PRODUCT / 10 + 1);
    assert.throws(() => mannWhitneyU(range(10), big, 'less', 'exact'), /exact method supports/);
  });

  it('properties: U1 + U2 = n1·n2, greater(x, y) = less(y, x), p in [0, 1] (fast-check, fixed seed)', () => {
    const sample = fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 25 });
    fc.assert(
      fc.property(sample, sample, (x, y) => {
        const g = mannWhitneyU(x, y, 'greater');
        const l = mannWhitneyU(y, x, 'less');
        assert.equal(g.u + l.u, x.length * y.length);
        assert.ok(Math.abs(g.p - l.p) < 1e-12);
        const t = mannWhitneyU(x, y, 'two-sided');
        for (const p of [g.p, l.p, t.p]) assert.ok(p >= 0 && p <= 1);
        const e = effectSize(g.u, x.length, y.length);
        assert.ok(e.cliffsDelta >= -1 && e.cliffsDelta <= 1);
      }),
      { seed: 16, numRuns: 300 },
    );
  });
});

describe('compareCohorts', () => {
  const base = { badDirection: 'higher' as const, confidence: 0.98, tolerance: 0.1, minSamples: 5 };

  it('too few samples is inconclusive, never a pass', () => {
    const r = compareCohorts({ ...base, treatment: [0, 0, 0, 0], control: [0, 0, 0, 0, 0, 0] });
    assert.equal(r.verdict, 'inconclusive');
    assert.equal(r.p, null);
    assert.deepEqual([r.n_treatment, r.n_control], [4, 6]);
  });

  it('identical cohorts pass; complete separation in the bad direction fails, in the good one passes', () => {
    assert.equal(
      compareCohorts({ ...base, treatment: [1, 1, 1, 1, 1], control: [1, 1, 1, 1, 1] }).verdict,
      'pass',
    );
    const worse = compareCohorts({ ...base, treatment: range(20).map((i) => i + 20), control: range(20) });
    assert.equal(worse.verdict, 'fail');
    assert.equal(worse.effect, 1);
    assert.equal(worse.u, 400);
    const better = compareCohorts({ ...base, treatment: range(20), control: range(20).map((i) => i + 20) });
    assert.equal(better.verdict, 'pass');
    assert.equal(better.effect, -1);
    // The same data with 'lower' as the bad direction turns around.
    assert.equal(
      compareCohorts({
        ...base,
        badDirection: 'lower',
        treatment: range(20),
        control: range(20).map((i) => i + 20),
      }).verdict,
      'fail',
    );
  });

  it('significant but within tolerance is marginal; large but not yet significant is marginal', () => {
    // 2000 vs 2000, a small shift: p = 4.65e-8 (scipy), Cliff's delta 0.0975 (< tolerance 0.3).
    const control = range(2000).map((i) => i % 100);
    const treatment = range(2000).map((i) => (i % 100) + 5);
    const small = compareCohorts({ ...base, tolerance: 0.3, treatment, control });
    assert.equal(small.verdict, 'marginal', small.reason);
    assert.ok((small.p as number) < 0.02 && (small.effect as number) <= 0.3);
    // Exact 5 vs 5: U = 22 of 25, p = 0.027777777777777776 (scipy, 'greater'): in [α, 2α), delta 0.76 > 0.1.
    const big = compareCohorts({ ...base, treatment: [3, 5, 7, 8, 9], control: [1, 2, 4, 6, 0] });
    assert.ok(Math.abs((big.p as number) - 0.027777777777777776) < 1e-12, big.reason);
    assert.equal(big.verdict, 'marginal', big.reason);
  });

  it('rejects a confidence, tolerance or minSamples out of range', () => {
    const t = { treatment: [1], control: [1] };
    assert.throws(() => compareCohorts({ ...base, ...t, confidence: 1 }), /confidence/);
    assert.throws(() => compareCohorts({ ...base, ...t, tolerance: -0.1 }), /tolerance/);
    assert.throws(() => compareCohorts({ ...base, ...t, minSamples: 0 }), /minSamples/);
  });
});

/** Events of one device over a one-day bake: 24 hourly checks, each with the given chance (Poisson-ish). */
function eventCounts(rng: Rng, devices: number, hourlyRate: number): number[] {
  return range(devices).map(() => {
    let n = 0;
    for (let h = 0; h < 24; h++) if (rng.next() < hourlyRate) n++;
    return n;
  });
}
/** Lognormal latencies via Box–Muller. */
function latencies(rng: Rng, devices: number, mu: number): number[] {
  return range(devices).map(() => {
    const z = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    return Math.exp(mu + 0.5 * z);
  });
}

describe('compareCohorts over seeded simulations', () => {
  const runs = 2000;
  const alpha = 0.02;
  // 3-sigma binomial bound on the observed false-positive fraction.
  const bound = alpha + 3 * Math.sqrt((alpha * (1 - alpha)) / runs);

  for (const [name, draw] of [
    ['event counts at 1 %/hour', (rng: Rng) => eventCounts(rng, 200, 0.01)],
    ['lognormal latencies', (rng: Rng) => latencies(rng, 200, 3)],
  ] as const) {
    it(`a release identical to its control fails ≤ ${alpha} + 3σ of ${runs} runs: ${name}`, () => {
      let fails = 0;
      for (let s = 0; s < runs; s++) {
        const rng = createRng(`same-${name}-${s}`);
        // Tolerance 0: the strictest setting, so only the test's own error rate counts.
        const r = compareCohorts({
          treatment: draw(rng),
          control: draw(rng),
          badDirection: 'higher',
          confidence: 0.98,
          tolerance: 0,
          minSamples: 100,
        });
        if (r.verdict === 'fail') fails++;
      }
      assert.ok(fails / runs <= bound, `${fails}/${runs} fails, bound ${bound.toFixed(4)}`);
      assert.ok(fails > 0, 'a 2 % test that never rejects over 2000 runs is suspicious');
    });
  }

  it('a doubled fault rate with 500 devices per cohort fails in ≥ 90 % of runs', () => {
    const n = 300;
    let fails = 0;
    for (let s = 0; s < n; s++) {
      const rng = createRng(`power-${s}`);
      const r = compareCohorts({
        treatment: eventCounts(rng, 500, 0.02),
        control: eventCounts(rng, 500, 0.01),
        badDirection: 'higher',
        confidence: 0.98,
        tolerance: 0.05,
        minSamples: 100,
      });
      if (r.verdict === 'fail') fails++;
    }
    assert.ok(fails / n >= 0.9, `${fails}/${n} runs failed the doubled rate`);
  });
});
