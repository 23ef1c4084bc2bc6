// The incremental step (an AssignmentIndex kept beside the assignments across steps and reports) gives the
// same result as the full recomputation (the step building its index from the assignments) on random fleets,
// plans and histories; and the kept index always equals one built from scratch. A partial step (only the
// devices fleetNeedIds names, or any subset) either gives that same result or throws FleetNeeded.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AssignmentIndex } from '../src/engine/assignment-index.ts';
import { fleetNeedIds } from '../src/engine/fleet-need.ts';
import type { Amount, Plan, WaveSpec } from '../src/engine/plan.ts';
import {
  type Assignment,
  applyReport,
  type DeviceView,
  type EngineEvent,
  FleetNeeded,
  newRollout,
  type StepOutput,
  step,
} from '../src/engine/rollout.ts';

const UNIT = 60_000;
const SELECTORS = ['*', 'tier=A', 'tier in (B,C)', 'role=replica', '!canary', 'canary'];

const arbDevice = fc.record({
  tier: fc.constantFrom('A', 'B', 'C'),
  role: fc.constantFrom('replica', 'primary'),
  cluster: fc.constantFrom('c0', 'c1', 'c2'),
  canary: fc.boolean(),
  held: fc.integer({ min: 0, max: 7 }).map((n) => n === 0),
  pinned: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  busy: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  without: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  deferred: fc.integer({ min: 0, max: 9 }).map((n) => (n === 0 ? 20 * UNIT : null)),
});

const arbAmount: fc.Arbitrary<Amount> = fc.oneof(
  fc.integer({ min: 0, max: 8 }).map((count) => ({ count })),
  fc.integer({ min: 1, max: 100 }).map((percent) => ({ percent })),
);

const arbWave = fc.record({
  select: fc.constantFrom(...SELECTORS),
  size: arbAmount,
  bake: fc.integer({ min: 0, max: 4 }),
  maxFailures: fc.oneof(
    fc.integer({ min: 0, max: 3 }).map((count) => ({ count })),
    fc.integer({ min: 0, max: 60 }).map((percent) => ({ percent })),
  ),
  minSuccess: fc.constantFrom(0, 50, 100),
  minReported: fc.option(fc.integer({ min: 0, max: 3 }), { nil: null }),
  approval: fc.boolean(),
  maxConcurrent: fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }),
  perCluster: fc.boolean(),
  order: fc.constantFrom([], ['role=replica'], ['tier=C', 'tier=B']),
  deadline: fc.integer({ min: 1, max: 6 }),
});

const arbPlan = fc.record({
  waves: fc.array(arbWave, { minLength: 1, maxLength: 4 }),
  onFailure: fc.constantFrom('halt' as const, 'halt-and-rollback' as const),
  window: fc.constantFrom(null, null, '*/10 * * * *'),
});

type Action =
  | { kind: 'report'; pick: number; ok: boolean; transient: boolean }
  | { kind: 'event'; ev: EngineEvent['kind'] }
  | { kind: 'tick'; by: number };

const arbAction: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('report' as const),
      pick: fc.nat(),
      ok: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
      transient: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('event' as const),
      ev: fc.constantFrom('pause', 'resume', 'abort', 'approve', 'rollback', 'retry') as fc.Arbitrary<
        EngineEvent['kind']
      >,
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('tick' as const), by: fc.integer({ min: 0, max: 7 * UNIT }) }),
  },
);

type Of<A> = A extends fc.Arbitrary<infer T> ? T : never;
type PlanSpec = Of<typeof arbPlan>;
type DeviceSpec = Of<typeof arbDevice>;

function toPlan(p: PlanSpec): Plan {
  return {
    name: 'p',
    description: '',
    onFailure: p.onFailure,
    emergencyBakeFactor: 0.5,
    releaseAgeMs: 0,
    firstWaveCapPercent: 100,
    waves: p.waves.map(
      (w, i): WaveSpec => ({
        name: `w${i}`,
        select: w.select,
        size: w.size,
        bakeMs: w.bake * UNIT,
        maxFailures: w.maxFailures,
        minSuccessPercent: w.minSuccess,
        minReported: w.minReported === null ? undefined : { count: w.minReported },
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

/** The step's result with its lists in device order: the order of changes is not part of its meaning. */
function normal(out: StepOutput): string {
  const byDevice = (a: { deviceId: string; kind?: string }, b: { deviceId: string; kind?: string }) =>
    a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0;
  return JSON.stringify({
    ...out,
    changed: [...out.changed].sort(byDevice),
    commands: [...out.commands].sort(byDevice),
  });
}

/** The index's content, comparable: tallies, queued ids in queue order, offered groups, reverting ids. */
function indexShape(ix: AssignmentIndex): string {
  const waves = [...ix.tallies.entries()]
    .filter(([, t]) => Object.values(t).some((n) => n !== 0))
    .map(([w]) => w)
    .sort((a, b) => a - b);
  return (
    JSON.stringify(
      waves.map((w) => ({
        w,
        tally: Object.entries(ix.tallies.get(w) ?? {}).filter(([, n]) => n !== 0),
        queued: [...(ix.queuedIds(w) ?? [])],
        offered: [...(ix.offered.get(w) ?? new Map()).entries()]
          .filter(([, ids]) => ids.size > 0)
          .map(([at, ids]) => [at, [...ids].sort()])
          .sort((a, b) => Number(a[0]) - Number(b[0])),
      })),
    ) + JSON.stringify([...ix.reverting].sort())
  );
}

/** How partial steps ended over all histories: both outcomes must occur for the property to mean something. */
const partialSteps = { same: 0, fleetNeeded: 0 };

/** Steps with only `some` devices: the same result as `full`, or FleetNeeded. */
function checkPartial(input: Parameters<typeof step>[0], some: DeviceView[], full: StepOutput, what: string) {
  try {
    const out = step({ ...input, devices: some, partial: true });
    assert.equal(normal(out), normal(full), `partial step (${what}) at ${input.now} differs`);
    partialSteps.same++;
  } catch (e) {
    if (!(e instanceof FleetNeeded)) throw e;
    partialSteps.fleetNeeded++;
  }
}

function runHistory(fleet: DeviceSpec[], planSpec: PlanSpec, actions: Action[]): void {
  const plan = toPlan(planSpec);
  const devices: DeviceView[] = fleet.map((d, i) => ({
    id: `d${String(i).padStart(3, '0')}`,
    labels: { tier: d.tier, role: d.role, cluster: d.cluster, ...(d.canary ? { canary: 'true' } : {}) },
    held: d.held,
    pinned: d.pinned,
    busy: d.busy,
    version: 'v1',
    deferredUntil: d.deferred,
    hasComponent: !d.without,
  }));
  let rollout = newRollout({ id: 'r', component: 'c', version: 'v2', releaseCreatedAt: 0, now: 0 });
  const asg = new Map<string, Assignment>();
  const kept = new AssignmentIndex();
  const put = (a: Assignment) => {
    kept.note(asg.get(a.deviceId), a);
    asg.set(a.deviceId, a);
  };
  let now = 0;
  const runStep = (events: EngineEvent[]) => {
    const incremental = step({ plan, rollout, assignments: asg, index: kept, devices, events, now });
    const full = step({ plan, rollout, assignments: asg, devices, events, now });
    assert.equal(normal(incremental), normal(full), `step at ${now} differs`);
    const input = { plan, rollout, assignments: asg, index: kept, devices, events, now };
    const need = fleetNeedIds(plan, rollout, kept);
    if (need)
      checkPartial(
        input,
        devices.filter((d) => need.has(d.id)),
        full,
        'fleetNeedIds',
      );
    checkPartial(
      input,
      devices.filter((_, i) => (i + now / UNIT) % 3 !== 0),
      full,
      'a subset',
    );
    rollout = incremental.rollout;
    for (const a of incremental.changed) put(a);
    assert.equal(indexShape(kept), indexShape(AssignmentIndex.of(asg.values())), 'kept index drifted');
  };
  runStep([]);
  for (const act of actions) {
    if (act.kind === 'tick') now += act.by;
    else if (act.kind === 'event') {
      runStep([{ kind: act.ev, actor: 'prop' } as EngineEvent]);
      continue;
    } else {
      const open = [...asg.values()].filter(
        (a) => a.state === 'offered' || a.state === 'reverting' || a.state === 'succeeded',
      );
      if (open.length > 0) {
        const a = open[act.pick % open.length];
        const next = applyReport(
          a,
          a.state === 'reverting'
            ? { outcome: 'succeeded', version: a.fromVersion ?? 'none', target: 'v2', at: now }
            : {
                outcome: act.ok ? 'succeeded' : 'failed',
                version: 'v2',
                target: 'v2',
                reason: act.ok ? null : act.transient ? 'download: connection reset' : 'health: probe failed',
                at: now,
              },
        );
        if (next) put(next);
      }
    }
    runStep([]);
  }
}

describe('incremental engine step', () => {
  it('a kept index gives the same step as a full recomputation, on random fleets and histories', () => {
    fc.assert(
      fc.property(
        fc.array(arbDevice, { minLength: 0, maxLength: 40 }),
        arbPlan,
        fc.array(arbAction, { maxLength: 80 }),
        (fleet, plan, actions) => runHistory(fleet, plan, actions),
      ),
      { numRuns: 300 },
    );
    assert.ok(partialSteps.same > 100, `partial steps that matched: ${partialSteps.same}`);
    assert.ok(
      partialSteps.fleetNeeded > 100,
      `partial steps that needed the fleet: ${partialSteps.fleetNeeded}`,
    );
  });

  it('fleetNeedIds names queued and reverting devices, and gives up past its limit', () => {
    const wave = {
      select: '*',
      size: { percent: 100 },
      bake: 0,
      maxFailures: { count: 0 },
      minSuccess: 100 as const,
      minReported: null,
      approval: false,
      maxConcurrent: null,
      perCluster: false,
      order: [] as const,
      deadline: 5,
    };
    const plan = toPlan({ waves: [wave], onFailure: 'halt', window: null });
    const rollout = newRollout({ id: 'r', component: 'c', version: 'v2', releaseCreatedAt: 0, now: 0 });
    const a = (id: string, state: Assignment['state']): Assignment => ({
      deviceId: id,
      wave: 0,
      state,
      fromVersion: 'v1',
      offeredAt: state === 'queued' ? null : 1,
      reportedAt: null,
      reason: null,
    });
    const ix = AssignmentIndex.of([
      a('q1', 'queued'),
      a('q2', 'queued'),
      a('r1', 'reverting'),
      a('o1', 'offered'),
    ]);
    assert.equal(fleetNeedIds(plan, rollout, ix), null, 'pending: a wave may start');
    const running = { ...rollout, status: 'running' as const, wave: 0 };
    assert.deepEqual([...(fleetNeedIds(plan, running, ix) ?? [])].sort(), ['q1', 'q2', 'r1']);
    assert.deepEqual([...(fleetNeedIds(plan, running, ix, 3) ?? [])].sort(), ['q1', 'q2', 'r1']);
    assert.equal(fleetNeedIds(plan, running, ix, 2), null, 'more than the limit: the whole fleet');
  });

  it('a wave start over a large fleet offers in selection order, once per device', () => {
    const devices: DeviceView[] = Array.from({ length: 5000 }, (_, i) => ({
      id: `d${String(4999 - i).padStart(5, '0')}`, // listed in reverse id order: selection sorts
      labels: { role: i % 3 === 0 ? 'replica' : 'primary' },
      held: i % 97 === 0,
      pinned: false,
      busy: false,
      version: 'v1',
    }));
    const plan = toPlan({
      waves: [
        {
          select: '*',
          size: { percent: 100 },
          bake: 0,
          maxFailures: { count: 0 },
          minSuccess: 100,
          minReported: null,
          approval: false,
          maxConcurrent: null,
          perCluster: false,
          order: ['role=replica'],
          deadline: 5,
        },
      ],
      onFailure: 'halt',
      window: null,
    });
    const rollout = newRollout({ id: 'r', component: 'c', version: 'v2', releaseCreatedAt: 0, now: 0 });
    const out = step({ plan, rollout, assignments: new Map(), devices, now: 1 });
    const offers = out.commands.map((c) => c.deviceId);
    assert.equal(new Set(offers).size, offers.length);
    assert.equal(out.changed.length, offers.length);
    assert.ok(out.changed.every((a) => a.state === 'offered'));
    const rank = (id: string) => (devices.find((d) => d.id === id)?.labels.role === 'replica' ? 0 : 1);
    for (let i = 1; i < offers.length; i++) {
      const [a, b] = [offers[i - 1], offers[i]];
      assert.ok(rank(a) < rank(b) || (rank(a) === rank(b) && a < b), `order at ${i}: ${a} then ${b}`);
    }
  });
});
