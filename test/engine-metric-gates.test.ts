import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { metricHolds } from '../src/engine/gates.ts';
import { type Plan, PlanError, parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  type DeviceView,
  type EngineEvent,
  eventRefusal,
  newRollout,
  type RolloutState,
  step,
} from '../src/engine/rollout.ts';

const planWith = (onFailure: string, gate = '') =>
  parsePlan(`
name: t
on_failure: ${onFailure}
waves:
  - name: canary
    size: 2
    bake: 60s
    metrics:
      - name: errors
        query: sum(rate(http_errors[1m])) / sum(rate(http_requests[1m]))
        comparison: '<'
        threshold: 0.05
        interval: 10s
${gate}
  - name: rest
    size: 100%
`);

function fleet(n: number): DeviceView[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `d${i}`,
    labels: {},
    held: false,
    pinned: false,
    busy: false,
    version: '1',
  }));
}

/**
 * Drives a rollout one step a second for `seconds`, every offered device succeeding at once; `metric(t, r)` gives
 * the metric events to feed at second t (evaluated by the caller as a Prometheus evaluator would).
 */
function drive(plan: Plan, seconds: number, metric: (t: number, r: RolloutState) => EngineEvent[]) {
  let rollout = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
  const assignments = new Map<string, Assignment>();
  const devices = fleet(6);
  const whys: string[] = [];
  let reverts = 0;
  for (let t = 0; t <= seconds; t++) {
    const now = t * 1000;
    const out = step({ plan, rollout, assignments, devices, events: metric(now, rollout), now });
    rollout = out.rollout;
    for (const a of out.changed) assignments.set(a.deviceId, a);
    for (const tr of out.transitions) whys.push(tr.why);
    reverts += out.commands.filter((c) => c.kind === 'revert').length;
    for (const a of assignments.values())
      if (a.state === 'offered')
        assignments.set(a.deviceId, { ...a, state: 'succeeded', outcome: 'succeeded', reportedAt: now });
    if (['completed', 'halted', 'rolled-back', 'rolling-back'].includes(rollout.status)) break;
  }
  return { rollout, whys, reverts };
}

/** Results every 10 s for the current wave's `errors` gate, with the value `value(t)`. */
const every10s =
  (value: (t: number) => number | null) =>
  (t: number, r: RolloutState): EngineEvent[] =>
    t % 10_000 === 0 && r.wave === 0
      ? [{ kind: 'metric', wave: 0, name: 'errors', value: value(t), error: 'connection refused', at: t }]
      : [];

describe('metric gates: plan', () => {
  it('parses gates with defaults: interval 30s, on_breach from on_failure', () => {
    const p = parsePlan(`
name: t
on_failure: halt-and-rollback
waves:
  - name: a
    size: 1
    metrics:
      - { name: e, query: 'up', comparison: '>=', threshold: 1 }
`);
    assert.deepEqual(p.waves[0].metrics, [
      {
        name: 'e',
        query: 'up',
        comparison: '>=',
        threshold: 1,
        intervalMs: 30_000,
        onBreach: 'halt-and-rollback',
      },
    ]);
  });

  it('names file, line and field of a bad gate', () => {
    const bad = (gate: string, want: RegExp) =>
      assert.throws(
        () =>
          parsePlan(`name: t\nwaves:\n  - name: a\n    size: 1\n    metrics:\n      - ${gate}\n`, 'p.yaml'),
        (e: Error) => e instanceof PlanError && want.test(e.message),
      );
    bad(`{ name: e, query: up, comparison: '=', threshold: 1 }`, /^p\.yaml:6: .*comparison/);
    bad(`{ name: e, query: up, comparison: '<', threshold: 1, interval: 1s }`, /interval.*at least 5s/);
    bad(`{ name: 'e x', query: up, comparison: '<', threshold: 1 }`, /name/);
    bad(`{ name: e, query: '${'x'.repeat(2001)}', comparison: '<', threshold: 1 }`, /query/);
    bad(`{ name: e, query: up, comparison: '<', threshold: '1' }`, /threshold/);
    bad(`{ name: e, query: up, comparison: '<', threshold: 1, on_breach: stop }`, /on_breach/);
    const many = Array.from(
      { length: 11 },
      (_, i) => `{ name: g${i}, query: up, comparison: '<', threshold: 1 }`,
    );
    assert.throws(
      () => parsePlan(`name: t\nwaves:\n  - name: a\n    size: 1\n    metrics: [${many.join(', ')}]\n`),
      /at most 10 metric gates/,
    );
    assert.throws(
      () =>
        parsePlan(
          `name: t\nwaves:\n  - name: a\n    size: 1\n    metrics: [{ name: g, query: a, comparison: '<', threshold: 1 }, { name: g, query: b, comparison: '<', threshold: 1 }]\n`,
        ),
      /duplicate metric gate name "g"/,
    );
  });

  it('compares as the condition that must hold', () => {
    assert.equal(metricHolds({ comparison: '<', threshold: 0.05 }, 0.01), true);
    assert.equal(metricHolds({ comparison: '<', threshold: 0.05 }, 0.05), false);
    assert.equal(metricHolds({ comparison: '<=', threshold: 0.05 }, 0.05), true);
    assert.equal(metricHolds({ comparison: '>', threshold: 1 }, 1), false);
    assert.equal(metricHolds({ comparison: '>=', threshold: 1 }, 1), true);
  });
});

describe('metric gates: engine', () => {
  it('a wave whose gate holds passes and the rollout completes, keeping the last result', () => {
    const { rollout } = drive(
      planWith('halt'),
      200,
      every10s(() => 0.01),
    );
    assert.equal(rollout.status, 'completed');
    const kept = rollout.metricGates ?? [];
    assert.equal(kept.length, 1);
    assert.equal(kept[0].state, 'ok');
    assert.equal(kept[0].value, 0.01);
  });

  it('a breach during the bake halts (on_failure halt) naming gate, query, value and threshold', () => {
    const { rollout, reverts } = drive(
      planWith('halt'),
      200,
      every10s((t) => (t >= 30_000 ? 0.2 : 0.01)),
    );
    assert.equal(rollout.status, 'halted');
    assert.equal(rollout.haltedAtWave, 0);
    assert.equal(reverts, 0);
    assert.match(
      rollout.reason ?? '',
      /metric gate errors breached, query ".*http_errors.*" = 0\.2, must be < 0\.05/,
    );
    assert.equal(rollout.metricGates?.[0].state, 'breached');
  });

  it('a breach halts and rolls back under halt-and-rollback; the gate may override the plan', () => {
    const a = drive(
      planWith('halt-and-rollback'),
      200,
      every10s((t) => (t >= 30_000 ? 0.2 : 0)),
    );
    assert.equal(a.rollout.status, 'rolling-back');
    assert.equal(a.reverts, 2);
    const plan = planWith('halt-and-rollback');
    const gate = plan.waves[0].metrics?.[0];
    assert.ok(gate);
    gate.onBreach = 'halt';
    const b = drive(
      plan,
      200,
      every10s((t) => (t >= 30_000 ? 0.2 : 0)),
    );
    assert.equal(b.rollout.status, 'halted');
    assert.equal(b.reverts, 0);
  });

  it('a result that cannot be evaluated is inconclusive: halts without rolling back', () => {
    const { rollout, reverts } = drive(
      planWith('halt-and-rollback'),
      200,
      every10s((t) => (t >= 30_000 ? null : 0)),
    );
    assert.equal(rollout.status, 'halted');
    assert.equal(reverts, 0);
    assert.match(rollout.reason ?? '', /metric gate errors inconclusive.*connection refused/);
    assert.equal(rollout.metricGates?.[0].state, 'inconclusive');
  });

  it('no result within 3 intervals while baking halts as inconclusive (a dead Prometheus)', () => {
    const { rollout, reverts } = drive(
      planWith('halt-and-rollback'),
      200,
      // Results until 10 s, then none: Prometheus died.
      (t, r) => (t <= 10_000 ? every10s(() => 0)(t, r) : []),
    );
    assert.equal(rollout.status, 'halted');
    assert.equal(reverts, 0);
    assert.match(rollout.reason ?? '', /no result .* in 3 intervals/);
  });

  it('no result at all before a short bake ends halts as inconclusive', () => {
    const plan = planWith('halt');
    plan.waves[0].bakeMs = 5_000;
    const { rollout } = drive(plan, 100, () => []);
    assert.equal(rollout.status, 'halted');
    assert.match(rollout.reason ?? '', /no result for query .* before the bake ended/);
  });

  it('ignores results of another wave, an unknown gate, from before the wave, or out of running/baking', () => {
    const plan = planWith('halt');
    const r0 = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const out = step({ plan, rollout: r0, assignments: new Map(), devices: fleet(6), now: 5_000 });
    assert.equal(out.rollout.status, 'running');
    for (const ev of [
      { kind: 'metric', wave: 1, name: 'errors', value: 9, at: 6_000 },
      { kind: 'metric', wave: 0, name: 'nope', value: 9, at: 6_000 },
      { kind: 'metric', wave: 0, name: 'errors', value: 9, at: 1_000 },
      { kind: 'metric', wave: 0, name: 'errors', value: 9, at: Number.NaN },
    ] as EngineEvent[]) {
      const o = step({
        plan,
        rollout: out.rollout,
        assignments: new Map(),
        devices: fleet(6),
        events: [ev],
        now: 6_000,
      });
      assert.notEqual(o.rollout.status, 'halted', JSON.stringify(ev));
      assert.equal(o.rollout.metricGates, undefined, JSON.stringify(ev));
    }
    assert.equal(eventRefusal('halted', 'metric') !== null, true);
    // A non-finite value is no value: inconclusive.
    const o = step({
      plan,
      rollout: out.rollout,
      assignments: new Map(),
      devices: fleet(6),
      events: [{ kind: 'metric', wave: 0, name: 'errors', value: Number.POSITIVE_INFINITY, at: 6_000 }],
      now: 6_000,
    });
    assert.equal(o.rollout.status, 'halted');
    assert.equal(o.rollout.metricGates?.[0].value, null);
  });

  it('property: the wave passes exactly when every result holds and none is missing', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let run = 0; run < 200; run++) {
      const values = Array.from({ length: 30 }, () => {
        const x = rnd();
        return x < 0.03 ? null : x < 0.08 ? 0.06 + x : x / 100;
      });
      const onFailure = rnd() < 0.5 ? 'halt' : 'halt-and-rollback';
      const { rollout, reverts } = drive(
        planWith(onFailure),
        300,
        every10s((t) => (t / 10_000 < values.length ? values[t / 10_000] : 0)),
      );
      // Wave 0 starts at 0 s (the result fed with that first step finds it pending: ignored) and bakes until
      // 61 s, so the results at 10..60 s count.
      const seen = values.slice(1, 7);
      const first = seen.findIndex((v) => v === null || v >= 0.05);
      if (first === -1) {
        assert.equal(rollout.status, 'completed');
        continue;
      }
      const inconclusive = seen[first] === null;
      assert.equal(rollout.haltedAtWave, 0);
      if (inconclusive || onFailure === 'halt') {
        assert.equal(rollout.status, 'halted', JSON.stringify({ seen, r: rollout.reason }));
        assert.equal(reverts, 0);
      } else assert.equal(rollout.status, 'rolling-back', JSON.stringify({ seen, r: rollout.reason }));
    }
  });
});
