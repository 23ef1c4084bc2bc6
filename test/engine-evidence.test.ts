// Evidence gates (issue 16) above the statistics: which devices form the treatment and the control, how a look's
// signals add up to a verdict at the Bonferroni-split α, when looks fall due, attribution across overlapping
// rollouts, and the property: a release identical to its control is failed no more often than the
// configured false-positive rate, over thousands of seeded runs with several looks and signals.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { attribute, type RolloutExposure } from '../src/engine/attribution.ts';
import { compareCohorts } from '../src/engine/cohort-stats.ts';
import {
  assembleCohorts,
  type CohortDevice,
  type Cohorts,
  judgeEvidence,
  nextLook,
  testAlpha,
} from '../src/engine/evidence.ts';
import type { CompareSpec, SignalGateSpec } from '../src/engine/plan.ts';
import { createRng, type Rng } from '../src/sim/prng.ts';
import { poisson } from '../src/sim/signals.ts';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const HOUR = 3_600_000;

function spec(over: Partial<CompareSpec> = {}, signals?: Partial<SignalGateSpec>[]): CompareSpec {
  return {
    confidence: 0.98,
    minSamples: 20,
    looks: 1,
    onFail: 'halt',
    onMarginal: 'approval',
    extendMs: HOUR,
    signals: (signals ?? [{}]).map((s, i) => ({
      name: `s${i}`,
      bad: 'higher' as const,
      tolerance: 0.1,
      critical: true,
      ...s,
    })),
    ...over,
  };
}

function normal(rng: Rng): number {
  const u = 1 - rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

describe('assembleCohorts', () => {
  const since = 1_000;
  const exposure = 5_000;
  type Row = CohortDevice & { exposedAt: number | null; at?: number; values?: Record<string, number> };
  const rows: Row[] = [
    // treatment: in the selector, on the target, exposed, sampled after its exposure
    {
      id: 't1',
      labels: { tier: 'B' },
      version: '2',
      exposedAt: exposure,
      at: 6_000,
      values: { r: 1, b: 10 },
    },
    {
      id: 't2',
      labels: { tier: 'C' },
      version: '2',
      exposedAt: exposure,
      at: 5_000,
      values: { r: 2, b: 11 },
    },
    // on the target, but its sample describes the previous release (received before the exposure)
    { id: 't-old', labels: { tier: 'B' }, version: '2', exposedAt: exposure, at: 4_999, values: { r: 90 } },
    // on the target without an exposure here: running it from elsewhere, neither side
    { id: 't-else', labels: { tier: 'B' }, version: '2', exposedAt: null, at: 6_000, values: { r: 91 } },
    // exposed but back on the previous release (rolled back): neither side
    { id: 'rolled', labels: { tier: 'B' }, version: '1', exposedAt: exposure, at: 6_000, values: { r: 92 } },
    // control: in the selector, never exposed, not on the target, sampled since the wave started
    { id: 'c1', labels: { tier: 'B' }, version: '1', exposedAt: null, at: 1_000, values: { r: 3, b: 12 } },
    { id: 'c2', labels: { tier: 'C' }, version: null, exposedAt: null, at: 9_000, values: { r: 4, b: 13 } },
    // a sample from before the wave: too old
    { id: 'c-old', labels: { tier: 'B' }, version: '1', exposedAt: null, at: 999, values: { r: 93 } },
    // outside the selector, either side
    { id: 'out-t', labels: { tier: 'A' }, version: '2', exposedAt: exposure, at: 6_000, values: { r: 94 } },
    {
      id: 'out-c',
      labels: { tier: 'B', canary: 'yes' },
      version: '1',
      exposedAt: null,
      at: 6_000,
      values: { r: 95 },
    },
    // no sample at all
    { id: 'silent', labels: { tier: 'B' }, version: '1', exposedAt: null },
    // non-finite or missing values are dropped per signal; the device's other signals still count
    {
      id: 't-bad',
      labels: { tier: 'B' },
      version: '2',
      exposedAt: exposure,
      at: 7_000,
      values: { r: Number.NaN, b: 14 },
    },
    {
      id: 'c-bad',
      labels: { tier: 'C' },
      version: '1',
      exposedAt: null,
      at: 7_000,
      values: { r: Number.POSITIVE_INFINITY },
    },
  ];
  const input = (select: string) => ({
    select,
    target: '2',
    devices: rows.map(({ id, labels, version }) => ({ id, labels, version })),
    exposedAt: (id: string) => rows.find((r) => r.id === id)?.exposedAt ?? null,
    samples: new Map(
      rows
        .filter((r) => r.at !== undefined)
        .map((r) => [r.id, { values: r.values ?? {}, receivedAt: r.at as number }]),
    ),
    since,
    signals: ['r', 'b', 'absent'],
  });

  it('takes the treatment and the control from the same selector, by version, exposure and sample time', () => {
    const c = assembleCohorts(input('tier in (B,C), !canary'));
    assert.deepEqual(c.get('r'), { treatment: [1, 2], control: [3, 4] });
    assert.deepEqual(c.get('b'), { treatment: [10, 11, 14], control: [12, 13] });
    // A signal no device reports still has its (empty) cohorts: the gate sees "too few samples".
    assert.deepEqual(c.get('absent'), { treatment: [], control: [] });
    assert.deepEqual([...c.keys()], ['r', 'b', 'absent']);
  });

  it('the selector decides who is compared at all', () => {
    const c = assembleCohorts(input('tier=C'));
    assert.deepEqual(c.get('r'), { treatment: [2], control: [4] });
    const all = assembleCohorts(input('*'));
    assert.deepEqual(all.get('r'), { treatment: [1, 2, 94], control: [3, 4, 95] });
  });

  it('property: every value comes from a device that qualifies for its side, and none from one that does not', () => {
    const device = fc.record({
      tier: fc.constantFrom('A', 'B'),
      version: fc.constantFrom('1', '2', null),
      exposedAt: fc.option(fc.integer({ min: 0, max: 100 }), { nil: null }),
      receivedAt: fc.option(fc.integer({ min: 0, max: 100 }), { nil: undefined }),
      value: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constant(Number.NaN)),
    });
    fc.assert(
      fc.property(fc.array(device, { maxLength: 40 }), fc.integer({ min: 0, max: 100 }), (ds, since) => {
        // Each device's value is made unique (its index + a fraction) so it can be traced to its device.
        const list = ds.map((d, i) => ({
          ...d,
          id: `d${i}`,
          v: Number.isNaN(d.value) ? d.value : i + d.value / 10,
        }));
        const c = assembleCohorts({
          select: 'tier=B',
          target: '2',
          devices: list.map((d) => ({ id: d.id, labels: { tier: d.tier }, version: d.version })),
          exposedAt: (id) => list.find((d) => d.id === id)?.exposedAt ?? null,
          samples: new Map(
            list
              .filter((d) => d.receivedAt !== undefined)
              .map((d) => [d.id, { values: { x: d.v }, receivedAt: d.receivedAt as number }]),
          ),
          since,
          signals: ['x'],
        }).get('x') as Cohorts;
        const expected: Cohorts = { treatment: [], control: [] };
        for (const d of list) {
          if (d.receivedAt === undefined || d.receivedAt < since || d.tier !== 'B' || Number.isNaN(d.v))
            continue;
          if (d.version === '2' && d.exposedAt !== null && d.receivedAt >= d.exposedAt)
            expected.treatment.push(d.v);
          if (d.version !== '2' && d.exposedAt === null) expected.control.push(d.v);
        }
        assert.deepEqual(c, expected);
      }),
      { seed: 16, numRuns: 300 },
    );
  });
});

describe('judgeEvidence', () => {
  // A one-sided p of 0.0085 (Cliff's delta 0.36): significant at α = 0.02, not at 0.0067 or 0.0033.
  const control = range(30);
  const shifted = range(30).map((i) => i + 6);
  const p = compareCohorts({
    treatment: shifted,
    control,
    badDirection: 'higher',
    confidence: 0.5,
    tolerance: 0,
    minSamples: 5,
  }).p as number;
  const cohortsOf = (n: number, c: Cohorts) => new Map(range(n).map((i) => [`s${i}`, c]));

  it('testAlpha splits 1 − confidence over every look (the extension adds one) and every signal', () => {
    assert.ok(Math.abs(testAlpha(spec({ looks: 1 })) - 0.02) < 1e-12);
    assert.ok(Math.abs(testAlpha(spec({ looks: 1, onMarginal: 'extend' })) - 0.01) < 1e-12);
    assert.ok(Math.abs(testAlpha(spec({ looks: 3 }, [{}, {}])) - 0.02 / 6) < 1e-12);
    assert.ok(Math.abs(testAlpha(spec({ looks: 3, onMarginal: 'extend' }, [{}, {}])) - 0.02 / 8) < 1e-12);
    assert.ok(Math.abs(testAlpha(spec({ confidence: 0.9, looks: 4 }, [{}, {}, {}])) - 0.1 / 12) < 1e-12);
  });

  it('each signal is judged at the Bonferroni α, so the same data fails one gate and passes a stricter one', () => {
    assert.ok(p > 0.02 / 3 && p < 0.01, `precondition: p=${p}`);
    const single = judgeEvidence(spec({ looks: 1 }), cohortsOf(1, { treatment: shifted, control }));
    assert.equal(single.verdict, 'fail');
    assert.equal(single.signals[0].signal, 's0');
    assert.ok(Math.abs((single.signals[0].p as number) - p) < 1e-15);
    assert.equal(single.signals[0].n_treatment, 30);
    assert.equal(single.signals[0].n_control, 30);
    // α = 0.02 / 3: not significant, but large and p < 2α, so marginal
    const twoLooksExtend = judgeEvidence(
      spec({ looks: 2, onMarginal: 'extend' }),
      cohortsOf(1, { treatment: shifted, control }),
    );
    assert.equal(twoLooksExtend.verdict, 'marginal');
    // α = 0.02 / 6 with two signals (p ≥ 2α): both pass
    const strict = judgeEvidence(spec({ looks: 3 }, [{}, {}]), cohortsOf(2, { treatment: shifted, control }));
    assert.equal(strict.verdict, 'pass');
    assert.deepEqual(
      strict.signals.map((s) => s.verdict),
      ['pass', 'pass'],
    );
  });

  it('a failing critical signal fails the look; a failing non-critical one only makes it marginal', () => {
    const big = { treatment: range(40).map((i) => i + 30), control: range(40) };
    const same = { treatment: range(40), control: range(40) };
    const cohorts = new Map([
      ['s0', big],
      ['s1', same],
    ]);
    const nonCritical = judgeEvidence(spec({}, [{ critical: false }, { critical: true }]), cohorts);
    assert.equal(nonCritical.signals[0].verdict, 'fail');
    assert.equal(nonCritical.signals[0].critical, false);
    assert.equal(nonCritical.signals[1].verdict, 'pass');
    assert.equal(nonCritical.verdict, 'marginal');
    const critical = judgeEvidence(spec({}, [{ critical: true }, { critical: false }]), cohorts);
    assert.equal(critical.verdict, 'fail');
    // The bad direction is the signal's: the same shift is an improvement for a `lower`-is-bad signal.
    const lower = judgeEvidence(spec({}, [{ bad: 'lower' }]), new Map([['s0', big]]));
    assert.equal(lower.verdict, 'pass');
    // A real but small shift (within tolerance) is marginal, not fail.
    const small = judgeEvidence(
      spec({}, [{ tolerance: 0.9 }]),
      new Map([['s0', { treatment: range(200).map((i) => i + 60), control: range(200) }]]),
    );
    assert.equal(small.signals[0].verdict, 'marginal');
    assert.equal(small.verdict, 'marginal');
  });

  it('too few samples is inconclusive, never a pass, however clear the rest', () => {
    const clear = { treatment: range(40), control: range(40) };
    const few = { treatment: range(19).map((i) => i + 1000), control: range(40) };
    const v = judgeEvidence(
      spec({}, [{}, {}]),
      new Map([
        ['s0', clear],
        ['s1', few],
      ]),
    );
    assert.equal(v.signals[0].verdict, 'pass');
    assert.equal(v.signals[1].verdict, 'inconclusive');
    assert.equal(v.signals[1].p, null);
    assert.equal(v.verdict, 'inconclusive');
    // A signal with no cohorts at all (no device reported it).
    const missing = judgeEvidence(spec({}, [{}, {}]), new Map([['s0', clear]]));
    assert.equal(missing.verdict, 'inconclusive');
    assert.equal(missing.signals[1].n_treatment, 0);
    // Exactly min_samples on both sides is enough.
    const enough = judgeEvidence(spec(), new Map([['s0', { treatment: range(20), control: range(20) }]]));
    assert.equal(enough.verdict, 'pass');
    // A failing critical signal still fails beside an inconclusive one: harm seen is harm.
    const failing = judgeEvidence(
      spec({}, [{}, {}]),
      new Map([
        ['s0', { treatment: range(40).map((i) => i + 30), control: range(40) }],
        ['s1', few],
      ]),
    );
    assert.equal(failing.verdict, 'fail');
  });
});

describe('nextLook', () => {
  const start = 10_000;
  const bake = 3 * HOUR;
  it('spreads the looks evenly over the bake, the last at its end, then none', () => {
    const s = spec({ looks: 3 });
    assert.deepEqual(nextLook(s, start, bake, start + bake, null), { look: 1, at: start + HOUR });
    assert.deepEqual(nextLook(s, start, bake, start + bake, 1), { look: 2, at: start + 2 * HOUR });
    assert.deepEqual(nextLook(s, start, bake, start + bake, 2), { look: 3, at: start + bake });
    assert.equal(nextLook(s, start, bake, start + bake, 3), null);
    assert.deepEqual(nextLook(spec({ looks: 1 }), start, bake, start + bake, null), {
      look: 1,
      at: start + bake,
    });
    assert.equal(nextLook(spec({ looks: 1 }), start, bake, start + bake, 1), null);
  });

  it('after an extension, one more look at the new end, then none', () => {
    const s = spec({ looks: 3, onMarginal: 'extend' });
    const until = start + bake + HOUR;
    assert.deepEqual(nextLook(s, start, bake, until, 3), { look: 4, at: until });
    assert.equal(nextLook(s, start, bake, until, 4), null);
    // Looks before the end still follow the original bake, not the extended one.
    assert.deepEqual(nextLook(s, start, bake, until, 1), { look: 2, at: start + 2 * HOUR });
  });
});

describe('attribute', () => {
  // 600 devices; B (guilty) runs on 0..299; A (innocent) on 100..339: 200 of A's 240 devices also run B.
  const N = 600;
  const ids = range(N).map((i) => `d${i}`);
  const inB = (i: number) => i < 300;
  const inA = (i: number) => i >= 100 && i < 340;
  const exposures: RolloutExposure[] = [
    { rolloutId: 'A', label: 'rollout A (agent 2.1)', exposed: new Set(ids.filter((_, i) => inA(i))) },
    { rolloutId: 'B', label: 'rollout B (os 5.1)', exposed: new Set(ids.filter((_, i) => inB(i))) },
  ];
  function values(seed: string, shiftA: number, shiftB: number): Map<string, number> {
    const rng = createRng(seed);
    return new Map(ids.map((id, i) => [id, normal(rng) + (inA(i) ? shiftA : 0) + (inB(i) ? shiftB : 0)]));
  }
  const settings = { badDirection: 'higher' as const, confidence: 0.99, tolerance: 0.1, minSamples: 20 };

  it('blames the guilty rollout and clears the innocent one whose devices mostly run both', () => {
    const v = values('attr:b', 0, 1);
    // Judged alone (its devices against the rest), the innocent A looks bad: its devices mostly run B.
    const aAlone = compareCohorts({
      treatment: ids.filter((_, i) => inA(i)).map((id) => v.get(id) as number),
      control: ids.filter((_, i) => !inA(i)).map((id) => v.get(id) as number),
      ...settings,
    });
    assert.equal(aAlone.verdict, 'fail', aAlone.reason);
    const r = attribute({ values: v, ...settings, exposures });
    assert.deepEqual(
      r.blamed.map((b) => b.rolloutId),
      ['B'],
    );
    assert.equal(r.blamed[0].comparison.verdict, 'fail');
    assert.equal(r.blamed[0].label, 'rollout B (os 5.1)');
    assert.deepEqual(
      r.cleared.map((c) => c.rolloutId),
      ['A'],
    );
    // A was cleared on the devices without B: its 40 own devices against the 260 with neither.
    assert.notEqual(r.cleared[0].comparison.verdict, 'fail');
    assert.equal(r.cleared[0].comparison.n_treatment, 40);
    assert.equal(r.cleared[0].comparison.n_control, 260);
  });

  it('blames both when both are guilty, and none when nothing moved', () => {
    const both = attribute({ values: values('attr:ab', 1, 1), ...settings, exposures });
    assert.deepEqual(both.blamed.map((b) => b.rolloutId).sort(), ['A', 'B']);
    assert.deepEqual(both.cleared, []);
    const none = attribute({ values: values('attr:none', 0, 0), ...settings, exposures });
    assert.deepEqual(none.blamed, []);
    assert.deepEqual(none.cleared.map((c) => c.rolloutId).sort(), ['A', 'B']);
    for (const c of none.cleared) assert.notEqual(c.comparison.verdict, 'fail');
  });
});

describe('property: a release identical to its control is failed no more often than 1 − confidence', () => {
  // Each run: treatment and control from one distribution; three signals of different shapes (a count with
  // many ties, a skewed latency, a bounded ratio); each device's value accumulates over the bake, so the looks
  // see correlated, growing evidence as the server's do; with on_marginal extend the extension's look is taken
  // too. The run counts as failed when ANY look's verdict is `fail` (all signals critical).
  const T = 30;
  const C = 60;
  function failedRun(s: CompareSpec, rng: Rng, shift: number): boolean {
    const looks = s.looks + (s.onMarginal === 'extend' ? 1 : 0);
    type Dev = { level: number; count: number; latency: number; ratio: number };
    // A lasting per-device level for the latency: devices differ more than their hours do.
    const make = (): Dev => ({ level: 0.3 * normal(rng), count: 0, latency: 0, ratio: 0 });
    const treatment = range(T).map(make);
    const control = range(C).map(make);
    for (let look = 1; look <= looks; look++) {
      for (const [side, devs] of [
        [1, treatment],
        [0, control],
      ] as const) {
        for (const d of devs) {
          d.count += poisson(rng, 0.5 * (side ? 1 + shift : 1));
          d.latency += Math.exp(Math.log(2) + d.level + 0.5 * normal(rng));
          d.ratio += rng.next() * 0.1;
        }
      }
      const cohorts = new Map<string, Cohorts>([
        ['restarts', { treatment: treatment.map((d) => d.count), control: control.map((d) => d.count) }],
        [
          'boot_s',
          {
            treatment: treatment.map((d) => d.latency / look),
            control: control.map((d) => d.latency / look),
          },
        ],
        [
          'errors',
          { treatment: treatment.map((d) => d.ratio / look), control: control.map((d) => d.ratio / look) },
        ],
      ]);
      if (judgeEvidence(s, cohorts).verdict === 'fail') return true;
    }
    return false;
  }
  const gate = (confidence: number, onMarginal: 'extend' | 'approval') =>
    spec({ confidence, looks: 3, onMarginal }, [
      { name: 'restarts', tolerance: 0 },
      { name: 'boot_s', tolerance: 0 },
      { name: 'errors', tolerance: 0 },
    ]);
  function rate(s: CompareSpec, runs: number, seed: string, shift = 0): number {
    let failed = 0;
    for (let r = 0; r < runs; r++) if (failedRun(s, createRng(`${seed}:${r}`), shift)) failed++;
    return failed / runs;
  }
  const bound = (alpha: number, runs: number) => alpha + 3 * Math.sqrt((alpha * (1 - alpha)) / runs);

  for (const [confidence, onMarginal] of [
    [0.98, 'extend'],
    [0.98, 'approval'],
    [0.9, 'extend'],
  ] as const) {
    it(`confidence ${confidence}, 3 looks, 3 signals, on_marginal ${onMarginal}: 2000 seeded runs`, (t) => {
      const runs = 2000;
      const alpha = 1 - confidence;
      const fp = rate(gate(confidence, onMarginal), runs, `identical:${confidence}:${onMarginal}`);
      t.diagnostic(`false-positive rate ${fp} (configured ${alpha.toFixed(2)})`);
      assert.ok(
        fp <= bound(alpha, runs),
        `false-positive rate ${fp} above ${alpha} + 3σ (${bound(alpha, runs).toFixed(4)})`,
      );
    });
  }

  it('the same harness does catch a release that doubles the restarts (the property is not vacuous)', (t) => {
    const caught = rate(gate(0.98, 'extend'), 200, 'doubled', 1);
    t.diagnostic(`doubled restarts caught in ${caught} of runs`);
    assert.ok(caught >= 0.8, `caught ${caught}`);
    // And without Bonferroni (one test per look and signal at α = 0.02) identical releases fail far too often:
    // the split is what keeps the rate.
    const naive = (s: CompareSpec): CompareSpec => ({ ...s, confidence: 1 - 0.02 * 12 });
    const fp = rate(naive(gate(0.98, 'extend')), 1000, 'naive');
    t.diagnostic(`without the split: false-positive rate ${fp}`);
    assert.ok(fp > bound(0.02, 1000), `naive rate ${fp}`);
  });
});
