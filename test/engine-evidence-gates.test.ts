// The engine's side of evidence gates: plan syntax and refusals, and what each look does to a rollout (halt,
// halt and roll back, extend once, ask for approval, halt as inconclusive, wait for the final look, blamed).
// Looks are fed as an evaluator would feed them, on a virtual clock.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { EvidenceEvent, SignalVerdict } from '../src/engine/evidence.ts';
import { EVIDENCE_GRACE_MS, nextLook } from '../src/engine/evidence.ts';
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
import { haltReason } from '../src/server/metrics.ts';

const planWith = (compare: string, onFailure = 'halt', waves = '  - name: rest\n    size: 100%\n') =>
  parsePlan(`
name: t
on_failure: ${onFailure}
waves:
  - name: canary
    size: 2
    bake: 60s
    compare:
${compare}
${waves}`);

const GATE = `      signals:
        - name: restarts
          critical: true
        - name: boot_seconds
          bad: higher
`;

const fleet = (n: number): DeviceView[] =>
  Array.from({ length: n }, (_, i) => ({
    id: `d${i}`,
    labels: {},
    held: false,
    pinned: false,
    busy: false,
    version: '1',
  }));

const signal = (name: string, verdict: SignalVerdict['verdict'], critical: boolean): SignalVerdict => ({
  signal: name,
  critical,
  verdict,
  u: verdict === 'inconclusive' ? null : 10,
  p: verdict === 'inconclusive' ? null : verdict === 'pass' ? 0.4 : 0.001,
  effect: verdict === 'inconclusive' ? null : 0.5,
  n_treatment: 30,
  n_control: 30,
  reason: 'r',
});

type Look = (t: number, r: RolloutState) => EvidenceEvent['signals'] | null;

/**
 * Steps once a second for `seconds`; devices succeed at once. At each look that `nextLook` says is due, `look`
 * gives the signals' verdicts (null: the evaluator misses it). `events(t)` adds operator events.
 */
function drive(
  plan: Plan,
  seconds: number,
  look: Look,
  events: (t: number, r: RolloutState) => EngineEvent[] = () => [],
) {
  let rollout = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
  const assignments = new Map<string, Assignment>();
  const whys: string[] = [];
  const at = new Map<string, number>(); // first time a transition's why matched, by the why
  const looks: number[] = [];
  let reverts = 0;
  for (let t = 0; t <= seconds; t++) {
    const now = t * 1000;
    const evs: EngineEvent[] = [...events(now, rollout)];
    const wave = plan.waves[rollout.wave];
    if (rollout.status === 'baking' && wave?.compare && rollout.bakeUntil !== null) {
      const startedAt = rollout.bakeStartedAt ?? 0;
      const last = rollout.evidence?.find((k) => k.wave === rollout.wave && k.at >= startedAt);
      const due = nextLook(wave.compare, startedAt, wave.bakeMs, rollout.bakeUntil, last?.look ?? null);
      const signals = due && now >= due.at ? look(now, rollout) : null;
      if (due && signals) {
        looks.push(now);
        const worst = signals.some((s) => s.verdict === 'fail' && s.critical)
          ? 'fail'
          : signals.some((s) => s.verdict !== 'pass')
            ? signals.find((s) => s.verdict !== 'pass')?.verdict === 'inconclusive'
              ? 'inconclusive'
              : 'marginal'
            : 'pass';
        evs.push({ kind: 'evidence', wave: rollout.wave, look: due.look, at: now, verdict: worst, signals });
      }
    }
    const out = step({ plan, rollout, assignments, devices: fleet(6), events: evs, now });
    rollout = out.rollout;
    for (const a of out.changed) assignments.set(a.deviceId, a);
    for (const tr of out.transitions) {
      whys.push(tr.why);
      if (!at.has(tr.why)) at.set(tr.why, tr.at);
    }
    reverts += out.commands.filter((c) => c.kind === 'revert').length;
    for (const a of assignments.values())
      if (a.state === 'offered')
        assignments.set(a.deviceId, { ...a, state: 'succeeded', outcome: 'succeeded', reportedAt: now });
    if (['completed', 'halted', 'rolled-back', 'rolling-back', 'awaiting-approval'].includes(rollout.status))
      break;
  }
  const when = (re: RegExp) => [...at].find(([w]) => re.test(w))?.[1];
  return { rollout, whys, reverts, looks, when };
}

const all =
  (v: SignalVerdict['verdict'], critical = true): Look =>
  () => [signal('restarts', v, critical), signal('boot_seconds', 'pass', false)];

describe('evidence gates: plan', () => {
  it('parses the example in docs/plans.md', () => {
    const md = readFileSync(new URL('../docs/plans.md', import.meta.url), 'utf8');
    const block = [...md.matchAll(/```yaml\n([\s\S]*?)```/g)]
      .map((m) => m[1])
      .find((b) => b.includes('compare:'));
    assert.ok(block, 'the reference has an evidence gate example');
    const c = parsePlan(`name: doc\n${block}`, 'docs/plans.md').waves[0].compare;
    assert.equal(c?.onFail, 'halt-and-rollback');
    assert.equal(c?.extendMs, 2 * 3_600_000);
    assert.deepEqual(
      c?.signals.map((g) => [g.name, g.critical]),
      [
        ['restarts', true],
        ['boot_seconds', false],
      ],
    );
  });

  it('parses a gate with its defaults', () => {
    const p = planWith(GATE);
    const c = p.waves[0].compare;
    assert.ok(c);
    assert.equal(c.confidence, 0.98);
    assert.equal(c.minSamples, 30);
    assert.equal(c.looks, 1);
    assert.equal(c.onFail, 'halt');
    assert.equal(c.onMarginal, 'extend');
    assert.equal(c.extendMs, 60_000, 'extend defaults to the bake');
    assert.deepEqual(c.signals, [
      { name: 'restarts', bad: 'higher', tolerance: 0, critical: true },
      { name: 'boot_seconds', bad: 'higher', tolerance: 0, critical: false },
    ]);
    assert.equal(planWith(GATE, 'halt-and-rollback').waves[0].compare?.onFail, 'halt-and-rollback');
    assert.equal(p.waves[1].compare, null);
  });

  it('refuses bad gates with the line and field', () => {
    const bad = (compare: string, re: RegExp, waves?: string) =>
      assert.throws(
        () => planWith(compare, 'halt', waves),
        (e: unknown) => e instanceof PlanError && re.test((e as Error).message),
      );
    bad('      signals: []\n', /compare\.signals: an evidence gate needs at least one signal/);
    bad('      signals:\n        - name: Restarts\n', /signals\.0\.name: signal names use a-z/);
    bad('      signals:\n        - name: a\n        - name: a\n', /signals\.1\.name: duplicate signal "a"/);
    bad(`      confidence: 1\n${GATE}`, /confidence must be below 1/);
    bad(`      min_samples: 2\n${GATE}`, /min_samples must be at least 5/);
    bad(`      tolerance: 0.1\n${GATE}`, /waves\.0\.compare: .*tolerance/i);
    bad(
      `      signals:\n        - name: a\n          tolerance: 1\n`,
      /tolerance is a Cliff's delta below 1/,
    );
    assert.throws(
      () => parsePlan(`name: t\nwaves:\n  - name: w\n    size: 50%\n    compare:\n${GATE}`),
      /plan\.yaml:\d+: waves\.0\.compare: an evidence gate judges during the bake/,
    );
    assert.throws(
      () => parsePlan(`name: t\nwaves:\n  - name: w\n    size: 100%\n    bake: 1h\n    compare:\n${GATE}`),
      /leaves no device of its selector on the previous release/,
    );
  });
});

describe('evidence gates: engine', () => {
  it('goes on after a passing final look, and only after it', () => {
    let missing = true;
    const late: Look = (t, r) => {
      // The evaluator is late: the look comes 30 s after the end of the bake.
      if (missing && t < (r.bakeUntil ?? 0) + 30_000) return null;
      missing = false;
      return all('pass')(t, r);
    };
    const { rollout, looks, when } = drive(planWith(GATE), 300, late);
    assert.equal(rollout.status, 'completed', rollout.reason ?? '');
    assert.equal(looks.length, 1);
    const baking = when(/wave canary passed its gate/);
    const rest = when(/wave rest started/);
    assert.ok(baking !== undefined && rest !== undefined);
    assert.equal(looks[0], baking + 60_000 + 30_000, 'the look came 30 s after the bake');
    assert.equal(rest, looks[0], 'the next wave waited for it');
    assert.ok(rollout.evidence?.[0].final);
  });

  it('halts on a critical failure at any look, and rolls back when on_fail says so', () => {
    const gate = `      looks: 3\n      on_fail: halt-and-rollback\n${GATE}`;
    const { rollout, looks, reverts } = drive(planWith(gate), 300, (t, r) =>
      (r.evidence?.length ?? 0) === 0 ? all('pass')(t, r) : all('fail')(t, r),
    );
    assert.equal(rollout.status, 'rolling-back');
    assert.equal(looks.length, 2, 'the second (interim) look halts');
    assert.ok(rollout.bakeUntil !== null && looks[1] < rollout.bakeUntil, 'an interim look, before the end');
    assert.equal(reverts, 2);
    assert.match(
      rollout.reason ?? '',
      /wave canary: evidence gate fail: restarts fail \(p=0\.00100, effect 0\.500, treatment 30, control 30\)/,
    );
  });

  it('treats a failing non-critical signal as marginal: extends the bake once, then asks for approval', () => {
    const { rollout, whys, looks } = drive(planWith(GATE), 400, all('fail', false));
    assert.equal(rollout.status, 'awaiting-approval');
    assert.equal(looks.length, 2, 'the final look, then one more at the end of the extension');
    assert.equal(looks[1] - looks[0], 60_000, 'extended by the bake (the default)');
    assert.ok(whys.some((w) => /evidence gate marginal: restarts fail .*; bake extended/.test(w)));
    assert.match(rollout.reason ?? '', /needs approval to go on/);
    assert.deepEqual(rollout.extended, [0]);
  });

  it('asks for approval at once with on_marginal: approval, and an approval goes on', () => {
    const plan = planWith(`      on_marginal: approval\n${GATE}`);
    const first = drive(plan, 400, all('marginal'));
    assert.equal(first.rollout.status, 'awaiting-approval');
    assert.equal(first.looks.length, 1);
    const out = step({
      plan,
      rollout: first.rollout,
      assignments: new Map(),
      devices: fleet(6),
      events: [{ kind: 'approve', actor: 'alice' }],
      now: 400_000,
    });
    assert.equal(out.rollout.status, 'running');
    assert.equal(out.rollout.wave, 1);
  });

  it('completes when the last wave is approved after a marginal look', () => {
    const plan = planWith(`      on_marginal: approval\n${GATE}`, 'halt', '');
    const { rollout } = drive(plan, 400, all('marginal'));
    assert.equal(rollout.status, 'awaiting-approval');
    const out = step({
      plan,
      rollout,
      assignments: new Map(),
      devices: fleet(6),
      events: [{ kind: 'approve', actor: 'alice' }],
      now: 400_000,
    });
    assert.equal(out.rollout.status, 'completed');
  });

  it('halts as inconclusive (no rollback) when the final look lacks samples, or never comes', () => {
    const few = drive(planWith(GATE), 400, all('inconclusive'));
    assert.equal(few.rollout.status, 'halted');
    assert.equal(few.reverts, 0);
    assert.match(
      few.rollout.reason ?? '',
      /evidence gate inconclusive: restarts inconclusive \(treatment 30, control 30, need more samples\)/,
    );
    const none = drive(planWith(GATE), 400, () => null);
    assert.equal(none.rollout.status, 'halted');
    assert.match(none.rollout.reason ?? '', /no comparison of the signals at the end of the bake/);
    assert.equal(none.rollout.finishedAt, null);
    // It waited the grace, not more.
    const baking = none.when(/wave canary passed its gate/) as number;
    const halted = none.when(/no comparison of the signals/) as number;
    assert.equal(halted, baking + 60_000 + EVIDENCE_GRACE_MS);
  });

  it('ignores looks of another wave, before the bake, or while not baking', () => {
    const plan = planWith(GATE);
    let rollout = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const ev: EvidenceEvent = {
      kind: 'evidence',
      wave: 0,
      look: 1,
      at: 0,
      verdict: 'fail',
      signals: [signal('restarts', 'fail', true)],
    };
    const out = step({ plan, rollout, assignments: new Map(), devices: fleet(6), events: [ev], now: 0 });
    rollout = out.rollout;
    assert.equal(rollout.status, 'running');
    assert.equal(rollout.evidence, undefined);
    assert.equal(eventRefusal('running', 'evidence'), 'cannot evidence a rollout that is running');
    assert.equal(eventRefusal('baking', 'evidence'), null);
  });

  it('halts a rollout another rollout blamed, with its reason, and only while it is moving', () => {
    const plan = planWith(GATE);
    const r0 = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const blamed: EngineEvent = { kind: 'blamed', by: '7', why: 'attributed by rollout 7: restarts' };
    const running = step({ plan, rollout: r0, assignments: new Map(), devices: fleet(6), now: 0 });
    const out = step({
      plan,
      rollout: running.rollout,
      assignments: new Map(),
      devices: fleet(6),
      events: [blamed],
      now: 1,
    });
    assert.equal(out.rollout.status, 'halted');
    assert.equal(out.rollout.reason, 'attributed by rollout 7: restarts');
    assert.equal(eventRefusal('halted', 'blamed'), 'cannot blamed a rollout that is halted');
  });

  it('is counted under its own halt reasons in /metrics', () => {
    const halt = (why: string) => haltReason({ from: 'baking', to: 'halted', wave: 0, at: 0, why });
    const fail = drive(planWith(GATE), 300, all('fail'));
    assert.equal(halt(fail.rollout.reason ?? ''), 'evidence-gate');
    const none = drive(planWith(GATE), 400, () => null);
    assert.equal(halt(none.rollout.reason ?? ''), 'evidence-gate');
    assert.equal(halt("attributed by rollout 3's evidence gate: restarts is worse"), 'attributed');
  });

  it('counts each look of a bake once: a repeat (a second replica) is ignored', () => {
    const plan = planWith(`      looks: 2\n${GATE}`);
    let seen = 0;
    const { rollout } = drive(plan, 300, (t, r) => {
      seen++;
      return all('pass')(t, r);
    });
    assert.equal(rollout.status, 'completed');
    // Feed look 1 twice into a baking rollout: the second is dropped, the record keeps the first.
    const baking = drive(plan, 30, () => null).rollout;
    assert.equal(baking.status, 'baking');
    const ev = (at: number, verdict: 'pass' | 'fail'): EvidenceEvent => ({
      kind: 'evidence',
      wave: 0,
      look: 1,
      at,
      verdict,
      signals: [signal('restarts', verdict, true)],
    });
    const once = step({
      plan,
      rollout: baking,
      assignments: new Map(),
      devices: fleet(6),
      events: [ev(40_000, 'pass')],
      now: 40_000,
    });
    const twice = step({
      plan,
      rollout: once.rollout,
      assignments: new Map(),
      devices: fleet(6),
      events: [ev(41_000, 'fail')],
      now: 41_000,
    });
    assert.equal(twice.rollout.status, 'baking', 'the repeated look 1 (fail) was ignored');
    assert.equal(twice.rollout.evidence?.[0].at, 40_000);
    assert.ok(seen >= 2);
  });

  it('gives the final look its whole grace after a pause that spanned the end of the bake', () => {
    const plan = planWith(GATE);
    // Bake starts at 1 s and ends at 61 s; paused at 40 s, resumed at 661 s (10 minutes after the end).
    const pauseAt = 40_000;
    const resumeAt = 661_000;
    const events = (t: number): EngineEvent[] =>
      t === pauseAt
        ? [{ kind: 'pause', actor: 'ops' }]
        : t === resumeAt
          ? [{ kind: 'resume', actor: 'ops' }]
          : [];
    let rollout = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const assignments = new Map<string, Assignment>();
    for (let t = 0; t <= resumeAt + 1000; t += 1000) {
      const out = step({ plan, rollout, assignments, devices: fleet(6), events: events(t), now: t });
      rollout = out.rollout;
      for (const a of out.changed)
        assignments.set(
          a.deviceId,
          a.state === 'offered' ? { ...a, state: 'succeeded', outcome: 'succeeded', reportedAt: t } : a,
        );
    }
    assert.equal(rollout.status, 'baking', rollout.reason ?? '');
    assert.equal(rollout.finalLookAwaitedSince, resumeAt);
    const late = step({ plan, rollout, assignments, devices: fleet(6), now: resumeAt + EVIDENCE_GRACE_MS });
    assert.equal(late.rollout.status, 'halted', 'a missing look still halts, a grace after the resume');
  });

  it('halts a paused rollout another rollout blamed, and never rolls it back', () => {
    const plan = planWith(GATE, 'halt-and-rollback');
    const r0 = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const first = step({ plan, rollout: r0, assignments: new Map(), devices: fleet(6), now: 0 });
    const asg = new Map<string, Assignment>(first.changed.map((a) => [a.deviceId, a]));
    const paused = step({
      plan,
      rollout: first.rollout,
      assignments: asg,
      devices: fleet(6),
      events: [{ kind: 'pause', actor: 'ops' }],
      now: 1,
    });
    assert.equal(paused.rollout.status, 'paused');
    const out = step({
      plan,
      rollout: paused.rollout,
      assignments: asg,
      devices: fleet(6),
      events: [{ kind: 'blamed', by: '9', why: 'attributed by rollout 9' }],
      now: 2,
    });
    assert.equal(out.rollout.status, 'halted');
    assert.equal(out.commands.filter((c) => c.kind === 'revert').length, 0);
    assert.equal(out.rollout.pausedFrom, null, 'a resume does not go back to where the pause was');
  });

  it('refuses a gate that could never fail with its min_samples', () => {
    assert.throws(
      () => planWith(`      min_samples: 5\n      looks: 4\n${GATE}`),
      /compare\.min_samples: min_samples 5 can never reach the α of each test \(0\.00200/,
    );
    assert.doesNotThrow(() => planWith(`      min_samples: 8\n      looks: 4\n${GATE}`));
  });
});
