// Property tests: random fleets, plans and event orders (reports, operator events, clocks) driven through
// the real engine, with two rollouts of one component sharing the fleet. Invariants are checked after
// every step with independent code, not with the engine's own helpers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Amount, Plan, WaveSpec } from '../src/engine/plan.ts';
import {
  ACTIVE,
  type Assignment,
  applyReport,
  type DeviceView,
  type EngineEvent,
  newRollout,
  type RolloutState,
  type StepOutput,
  step,
} from '../src/engine/rollout.ts';
import { matches, parseSelector } from '../src/engine/selector.ts';
import { appendAudit, verifyAudit } from '../src/server/db/audit.ts';
import { openStore } from '../src/server/db/database.ts';

const UNIT = 60_000;
const SELECTORS = [
  '*',
  'tier=A',
  'tier in (B,C)',
  'role=replica',
  '!canary',
  'canary',
  'tier!=C, role=primary',
];
const OWNING = new Set(['queued', 'offered', 'succeeded', 'failed', 'reverting']);

const arbDevice = fc.record({
  tier: fc.constantFrom('A', 'B', 'C'),
  role: fc.constantFrom('replica', 'primary'),
  cluster: fc.constantFrom('c0', 'c1', 'c2'),
  canary: fc.boolean(),
  held: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
  pinned: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  deferred: fc.integer({ min: 0, max: 9 }).map((n) => (n === 0 ? 30 * UNIT : null)),
});

const arbAmount: fc.Arbitrary<Amount> = fc.oneof(
  fc.integer({ min: 0, max: 6 }).map((count) => ({ count })),
  fc.integer({ min: 1, max: 100 }).map((percent) => ({ percent })),
);

const arbWave = fc.record({
  select: fc.constantFrom(...SELECTORS),
  size: arbAmount,
  bake: fc.integer({ min: 0, max: 5 }),
  maxFailures: fc.oneof(
    fc.integer({ min: 0, max: 2 }).map((count) => ({ count })),
    fc.integer({ min: 0, max: 50 }).map((percent) => ({ percent })),
  ),
  minSuccess: fc.constantFrom(0, 50, 100),
  approval: fc.boolean(),
  maxConcurrent: fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }),
  perCluster: fc.boolean(),
  order: fc.constantFrom([], ['role=replica'], ['tier=C', 'tier=B']),
  deadline: fc.integer({ min: 1, max: 6 }),
});

const arbPlan = fc.record({
  waves: fc.array(arbWave, { minLength: 1, maxLength: 4 }),
  onFailure: fc.constantFrom('halt' as const, 'halt-and-rollback' as const),
  releaseAge: fc.integer({ min: 0, max: 3 }),
  window: fc.constantFrom(null, '0 * * * *', '*/10 * * * *'),
});

type Of<A> = A extends fc.Arbitrary<infer T> ? T : never;
type PlanSpec = Of<typeof arbPlan>;
type DeviceSpec = Of<typeof arbDevice>;

type Action =
  | { kind: 'report'; r: number; pick: number; ok: boolean; transient: boolean }
  | { kind: 'event'; r: number; ev: EngineEvent['kind'] }
  | { kind: 'tick'; by: number };

const arbAction: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('report' as const),
      r: fc.integer({ min: 0, max: 1 }),
      pick: fc.nat(),
      ok: fc.integer({ min: 0, max: 4 }).map((n) => n > 0),
      transient: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('event' as const),
      r: fc.integer({ min: 0, max: 1 }),
      ev: fc.constantFrom('pause', 'resume', 'abort', 'approve', 'rollback', 'retry') as fc.Arbitrary<
        EngineEvent['kind']
      >,
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('tick' as const), by: fc.integer({ min: 0, max: 8 * UNIT }) }),
  },
);

function toPlan(p: PlanSpec): Plan {
  return {
    name: 'p',
    description: '',
    onFailure: p.onFailure,
    emergencyBakeFactor: 0.5,
    releaseAgeMs: p.releaseAge * UNIT,
    firstWaveCapPercent: 100,
    waves: p.waves.map(
      (w, i): WaveSpec => ({
        name: `w${i}`,
        select: w.select,
        size: w.size,
        bakeMs: w.bake * UNIT,
        maxFailures: w.maxFailures,
        minSuccessPercent: w.minSuccess,
        approval: w.approval,
        maxConcurrent: w.maxConcurrent,
        maxConcurrentPer: w.perCluster ? { label: 'cluster', max: 1 } : null,
        order: [...w.order],
        window: p.window ? { cron: p.window, durationMs: 4 * UNIT, timezone: 'Europe/Berlin' } : null,
        reportDeadlineMs: w.deadline * UNIT,
      }),
    ),
  };
}

interface Sim {
  rollout: RolloutState;
  asg: Map<string, Assignment>;
  offeredEver: Set<string>;
}

/** Independent gate check: the wave's failures within budget and its success ratio met. */
function gatePassed(w: WaveSpec, list: Assignment[], budgetOnly = false): boolean {
  const failed = list.filter((a) => a.state === 'failed').length;
  const selected = list.filter((a) => a.state !== 'skipped').length;
  const okBudget =
    'count' in w.maxFailures
      ? failed <= w.maxFailures.count
      : selected === 0 || failed * 100 <= w.maxFailures.percent * selected;
  const succeeded = list.filter((a) => a.state === 'succeeded').length;
  return okBudget && (budgetOnly || selected === 0 || succeeded * 100 >= w.minSuccessPercent * selected);
}

function maxSize(a: Amount, base: number): number {
  return 'count' in a ? Math.min(a.count, base) : Math.ceil((a.percent * base) / 100);
}

function runScenario(
  fleetSpec: DeviceSpec[],
  planSpecs: [PlanSpec, PlanSpec],
  actions: Action[],
  onStep?: (r: number, out: StepOutput) => void,
): void {
  const plans = planSpecs.map(toPlan);
  const sims: Sim[] = [0, 1].map((i) => ({
    rollout: newRollout({ id: `r${i}`, component: 'c', version: `v${i + 2}`, releaseCreatedAt: 0, now: 0 }),
    asg: new Map(),
    offeredEver: new Set(),
  }));
  let now = 0;
  const base: Omit<DeviceView, 'busy'>[] = fleetSpec.map((d, i) => ({
    id: `d${String(i).padStart(3, '0')}`,
    labels: { tier: d.tier, role: d.role, cluster: d.cluster, ...(d.canary ? { canary: 'true' } : {}) },
    held: d.held,
    pinned: d.pinned,
    version: 'v1',
    deferredUntil: d.deferred,
  }));
  const runStep = (ri: number, events: EngineEvent[]) => {
    const sim = sims[ri];
    const other = sims[1 - ri];
    const devices: DeviceView[] = base.map((d) => ({
      ...d,
      busy: ACTIVE.has(other.rollout.status) && OWNING.has(other.asg.get(d.id)?.state ?? ''),
    }));
    const byId = new Map(devices.map((d) => [d.id, d]));
    const before = sim.rollout;
    const plan = plans[ri];
    const out = step({ plan, rollout: before, assignments: sim.asg, devices, events, now });
    onStep?.(ri, out);
    // Holds, pins, deferrals and the other rollout always win.
    for (const c of out.commands) {
      if (c.kind !== 'offer') continue;
      const d = byId.get(c.deviceId)!;
      assert.ok(!d.held && !d.pinned && !d.busy, `offer to held/pinned/busy ${c.deviceId}`);
      assert.ok(d.deferredUntil == null || now >= d.deferredUntil, `offer to deferred ${c.deviceId}`);
      sim.offeredEver.add(c.deviceId);
    }
    for (const a of out.changed) {
      if (a.state === 'queued' && !sim.asg.has(a.deviceId)) {
        const d = byId.get(a.deviceId)!;
        assert.ok(!d.held && !d.pinned && !d.busy, `held/pinned/busy ${a.deviceId} selected`);
      }
    }
    // A halted, paused or finished rollout assigns and offers nothing.
    const quiet = ['paused', 'halted', 'aborted', 'rolled-back', 'rolling-back', 'completed'];
    if (quiet.includes(out.rollout.status)) {
      assert.equal(
        out.commands.filter((c) => c.kind === 'offer').length,
        0,
        `offers while ${out.rollout.status}`,
      );
      assert.equal(
        out.changed.filter((a) => a.state === 'queued' && sim.asg.get(a.deviceId)?.state !== 'queued').length,
        events.some((e) => e.kind === 'retry') ? out.changed.filter((a) => a.state === 'queued').length : 0,
      );
    }
    if (events.length === 0 && ['paused', 'halted'].includes(before.status)) {
      assert.equal(out.commands.length, 0, `commands while ${before.status} without operator action`);
      assert.equal(out.rollout.status, before.status);
    }
    // Awaiting approval offers nothing; a failure reported meanwhile may only stop it (halt or roll back).
    if (events.length === 0 && before.status === 'awaiting-approval') {
      assert.equal(
        out.commands.filter((c) => c.kind === 'offer').length,
        0,
        'offers while awaiting approval',
      );
      assert.ok(
        ['awaiting-approval', 'halted', 'rolling-back', 'rolled-back'].includes(out.rollout.status),
        `awaiting-approval became ${out.rollout.status} without operator action`,
      );
    }
    const next = new Map(sim.asg);
    for (const a of out.changed) next.set(a.deviceId, a);
    // Exposure: a wave starts only when every earlier wave passed its gate (and baked), and each wave
    // holds no more devices than its size allows.
    if (out.rollout.wave > before.wave) {
      // Waves that finished in this step must pass the whole gate; older ones stay within their budget.
      for (let w = 0; w < out.rollout.wave; w++) {
        const list = [...next.values()].filter((a) => a.wave === w);
        assert.ok(
          gatePassed(plan.waves[w], list, w < before.wave),
          `wave ${w + 1} started though wave ${w} failed its gate`,
        );
      }
      if (before.wave >= 0 && before.status === 'baking')
        assert.ok(before.bakeUntil !== null && now >= before.bakeUntil, 'next wave before bake ended');
    }
    for (let w = 0; w < plan.waves.length; w++) {
      const list = [...next.values()].filter((a) => a.wave === w);
      if (w > out.rollout.wave) assert.equal(list.length, 0, `assignments in wave ${w} not yet started`);
    }
    let bound = 0;
    for (let w = 0; w <= Math.min(out.rollout.wave, plan.waves.length - 1); w++)
      bound += maxSize(plan.waves[w].size, devices.length);
    assert.ok(sim.offeredEver.size <= bound, `exposed ${sim.offeredEver.size} > bound ${bound}`);
    sim.rollout = out.rollout;
    sim.asg = next;
    // One component, one rollout per device.
    if (ACTIVE.has(sims[0].rollout.status) && ACTIVE.has(sims[1].rollout.status))
      for (const d of devices)
        assert.ok(
          !(OWNING.has(sims[0].asg.get(d.id)?.state ?? '') && OWNING.has(sims[1].asg.get(d.id)?.state ?? '')),
          `${d.id} in two rollouts`,
        );
  };
  runStep(0, []);
  runStep(1, []);
  for (const act of actions) {
    if (act.kind === 'tick') {
      now += act.by;
      runStep(0, []);
      runStep(1, []);
    } else if (act.kind === 'event') {
      const ev = { kind: act.ev, actor: 'prop' } as EngineEvent;
      runStep(act.r, [ev]);
    } else {
      const sim = sims[act.r];
      const open = [...sim.asg.values()].filter(
        (a) => a.state === 'offered' || a.state === 'reverting' || a.state === 'succeeded',
      );
      if (open.length === 0) continue;
      const a = open[act.pick % open.length];
      const target = sim.rollout.version;
      const rep =
        a.state === 'reverting'
          ? { outcome: 'succeeded' as const, version: a.fromVersion ?? 'none', target, at: now }
          : {
              outcome: act.ok ? ('succeeded' as const) : ('failed' as const),
              version: target,
              target,
              reason: act.ok ? null : act.transient ? 'download: connection reset' : 'health: probe failed',
              at: now,
            };
      const next = applyReport(a, rep);
      if (next) sim.asg.set(a.deviceId, next);
      runStep(act.r, []);
    }
  }
}

const arbFleet = fc.array(arbDevice, { minLength: 0, maxLength: 30 });

describe('engine properties', () => {
  it('exposure, quiet states, holds/pins/busy and single ownership hold for random runs', () => {
    fc.assert(
      fc.property(
        arbFleet,
        arbPlan,
        arbPlan,
        fc.array(arbAction, { maxLength: 80 }),
        (fleet, p0, p1, actions) => {
          runScenario(fleet, [p0, p1], actions);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('is deterministic: the same inputs give the same outputs', () => {
    fc.assert(
      fc.property(arbFleet, arbPlan, fc.array(arbAction, { maxLength: 40 }), (fleet, p, actions) => {
        const a: string[] = [];
        const b: string[] = [];
        runScenario(fleet, [p, p], actions, (r, out) => a.push(JSON.stringify([r, out])));
        runScenario(fleet, [p, p], actions, (r, out) => b.push(JSON.stringify([r, out])));
        assert.deepEqual(a, b);
      }),
      { numRuns: 50 },
    );
  });

  it('the audit chain of every transition verifies in a real SQLite store, and tampering is caught', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-prop-audit-'));
    try {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(
          arbFleet,
          arbPlan,
          arbPlan,
          fc.array(arbAction, { maxLength: 50 }),
          fc.nat(),
          async (fleet, p0, p1, actions, tamper) => {
            const store = await openStore({ dataDir: join(dir, String(run++)) });
            try {
              const transitions: { r: number; t: StepOutput['transitions'][number] }[] = [];
              runScenario(fleet, [p0, p1], actions, (r, out) => {
                for (const t of out.transitions) transitions.push({ r, t });
              });
              await store.db.transaction().execute(async (tx) => {
                for (const { r, t } of transitions)
                  await appendAudit(tx, {
                    at: t.at,
                    actor: 'engine',
                    action: `rollout.${t.to}`,
                    subject: `rollout/r${r}`,
                    detail: t,
                  });
              });
              const ok = await verifyAudit(store.db);
              assert.equal(ok.entries, transitions.length);
              assert.equal(ok.brokenAt, null);
              if (transitions.length > 0) {
                const seqs = await store.db.selectFrom('audit').select('seq').orderBy('seq').execute();
                const victim = seqs[tamper % seqs.length].seq;
                await store.db
                  .updateTable('audit')
                  .set({ actor: 'mallory' })
                  .where('seq', '=', victim)
                  .execute();
                const bad = await verifyAudit(store.db);
                assert.equal(bad.brokenAt, victim);
              }
            } finally {
              await store.close();
            }
          },
        ),
        { numRuns: 15 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('selectors used above parse', () => {
    for (const s of SELECTORS)
      assert.ok(matches(parseSelector(s), { tier: 'A', role: 'primary' }) !== undefined);
  });
});
