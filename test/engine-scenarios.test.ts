// Scenario tests: the practices of the seeds, written as plans and driven through the real engine with an
// injected clock and scripted device reports.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Plan, parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  applyReport,
  type Command,
  type DeviceView,
  type EngineEvent,
  newRollout,
  type RolloutState,
  type StepOutput,
  step,
} from '../src/engine/rollout.ts';
import { windowOpen } from '../src/engine/window.ts';

const H = 3_600_000;
const D = 24 * H;

function dev(id: string, labels: Record<string, string>, extra: Partial<DeviceView> = {}): DeviceView {
  return { id, labels, held: false, pinned: false, busy: false, version: '1.0', ...extra };
}

/** A rollout under test: steps the engine and plays the devices' side. */
class Harness {
  rollout: RolloutState;
  asg = new Map<string, Assignment>();
  log: { at: number; cmd: Command }[] = [];
  outs: StepOutput[] = [];
  inFlight: string[][] = []; // offered devices after each step

  constructor(
    readonly plan: Plan,
    public devices: DeviceView[],
    public now = 0,
    opts: { emergency?: boolean; releaseCreatedAt?: number } = {},
  ) {
    this.rollout = newRollout({
      id: 'r',
      component: 'c',
      version: '2.0',
      emergency: opts.emergency,
      releaseCreatedAt: opts.releaseCreatedAt ?? now,
      now,
    });
  }

  step(events: EngineEvent[] = []): StepOutput {
    const out = step({
      plan: this.plan,
      rollout: this.rollout,
      assignments: this.asg,
      devices: this.devices,
      events,
      now: this.now,
    });
    this.rollout = out.rollout;
    for (const a of out.changed) this.asg.set(a.deviceId, a);
    for (const cmd of out.commands) this.log.push({ at: this.now, cmd });
    this.outs.push(out);
    this.inFlight.push([...this.asg.values()].filter((a) => a.state === 'offered').map((a) => a.deviceId));
    return out;
  }

  report(id: string, outcome: 'succeeded' | 'failed', reason: string | null = null, version = '2.0'): void {
    const a = this.asg.get(id);
    assert.ok(a, `no assignment for ${id}`);
    const next = applyReport(a, { outcome, version, target: '2.0', reason, at: this.now });
    if (next) this.asg.set(id, next);
  }

  /** Every offered device reports `outcome(id)`; then one step. */
  reportAll(outcome: (id: string) => 'succeeded' | 'failed' | null = () => 'succeeded'): StepOutput {
    for (const a of [...this.asg.values()])
      if (a.state === 'offered') {
        const o = outcome(a.deviceId);
        if (o) this.report(a.deviceId, o, o === 'failed' ? 'health: probe failed' : null);
      }
    return this.step();
  }

  /** Advances the clock to the engine's wake time (or by `by`) and steps. */
  advance(by?: number): StepOutput {
    const last = this.outs.at(-1);
    this.now = by !== undefined ? this.now + by : Math.max(this.now + 1, last?.wakeAt ?? this.now + 1);
    return this.step();
  }

  offers(): string[] {
    return this.log.filter((l) => l.cmd.kind === 'offer').map((l) => l.cmd.deviceId);
  }
}

describe('scenario: A/B/C tiers, replicas before primaries, one per cluster', () => {
  const plan = parsePlan(`
name: abc
waves:
  - name: tier-C
    select: tier=C
    size: 100%
    order: [role=replica]
    max_concurrent_per: { label: cluster, max: 1 }
  - name: tier-B
    select: tier=B
    size: 100%
    order: [role=replica]
    max_concurrent_per: { label: cluster, max: 1 }
  - name: tier-A
    select: tier=A
    size: 100%
    order: [role=replica]
    max_concurrent_per: { label: cluster, max: 1 }
`);
  const fleet: DeviceView[] = [];
  for (const tier of ['A', 'B', 'C'])
    for (const cluster of ['k1', 'k2', 'k3'])
      for (const [i, role] of ['primary', 'replica', 'replica'].entries())
        fleet.push(dev(`${tier}-${cluster}-${i}`, { tier, cluster, role }));

  it('goes C → B → A, never two devices of one cluster at once, replicas first', () => {
    const h = new Harness(plan, fleet);
    h.step();
    for (let i = 0; i < 50 && h.rollout.status !== 'completed'; i++) h.reportAll();
    assert.equal(h.rollout.status, 'completed');
    const offers = h.offers();
    assert.equal(offers.length, 27);
    const tiers = offers.map((id) => id[0]).join('');
    assert.equal(tiers, `${'C'.repeat(9)}${'B'.repeat(9)}${'A'.repeat(9)}`);
    for (const flight of h.inFlight) {
      const clusters = flight.map((id) => id.split('-')[1]);
      assert.equal(new Set(clusters).size, clusters.length, `two in one cluster: ${flight}`);
    }
    for (const tier of ['A', 'B', 'C'])
      for (const cluster of ['k1', 'k2', 'k3']) {
        const order = offers.filter((id) => id.startsWith(`${tier}-${cluster}-`));
        assert.equal(order.at(-1), `${tier}-${cluster}-0`, `primary of ${tier}/${cluster} last: ${order}`);
      }
  });
});

describe('scenario: maintenance windows across DST (Europe/Berlin)', () => {
  const plan = parsePlan(`
name: nightly
report_deadline: 30m
window: { cron: "30 2 * * *", duration: 2h, timezone: Europe/Berlin }
waves:
  - name: all
    size: 100%
`);

  it('spring forward: a 02:30 start in the gap opens at 03:00 CEST (01:00Z) and lasts 2 hours', () => {
    const h = new Harness(plan, [dev('d1', {})], Date.parse('2026-03-28T12:00:00Z'));
    const out = h.step();
    assert.equal(h.offers().length, 0, 'window closed at noon');
    assert.equal(out.wakeAt, Date.parse('2026-03-29T01:00:00Z'));
    h.advance();
    assert.deepEqual(h.offers(), ['d1']);
    assert.equal(h.log[0].at, Date.parse('2026-03-29T01:00:00Z'));
    const w = windowOpen(plan.waves[0].window!, Date.parse('2026-03-29T02:59:00Z'));
    assert.equal(w.open, true);
    assert.equal(w.nextChange, Date.parse('2026-03-29T03:00:00Z'));
  });

  it('fall back: 02:30 happens twice; the window opens once, at the first (00:30Z)', () => {
    const spec = plan.waves[0].window!;
    assert.equal(windowOpen(spec, Date.parse('2026-10-25T00:29:00Z')).open, false);
    assert.equal(windowOpen(spec, Date.parse('2026-10-25T00:30:00Z')).open, true);
    assert.equal(windowOpen(spec, Date.parse('2026-10-25T02:29:00Z')).open, true);
    const after = windowOpen(spec, Date.parse('2026-10-25T02:30:00Z'));
    assert.equal(after.open, false, 'closed after 2 elapsed hours, not reopened at the second 02:30');
    assert.equal(after.nextChange, Date.parse('2026-10-26T01:30:00Z'), 'next night is CET (UTC+1)');
  });

  it('ordinary days are 00:30Z in summer and 01:30Z in winter', () => {
    const spec = plan.waves[0].window!;
    assert.equal(
      windowOpen(spec, Date.parse('2026-07-01T00:00:00Z')).nextChange,
      Date.parse('2026-07-01T00:30:00Z'),
    );
    assert.equal(
      windowOpen(spec, Date.parse('2026-01-10T00:00:00Z')).nextChange,
      Date.parse('2026-01-10T01:30:00Z'),
    );
  });

  it('a device waiting for its window never counts as failed; the deadline runs from the window opening', () => {
    const late = parsePlan(`
name: late
report_deadline: 3h
device_windows:
  label: maint
  windows:
    night: { cron: "0 1 * * *", duration: 1h, timezone: Europe/Berlin }
waves:
  - name: all
    size: 100%
    max_failures: 0
`);
    const start = Date.parse('2026-06-01T10:00:00Z');
    const h = new Harness(late, [dev('any', {}), dev('night', { maint: 'night' })], start);
    h.step();
    assert.deepEqual(h.offers(), ['any'], 'the night device waits for its window');
    h.report('any', 'succeeded');
    // Days pass; the night device is never failed while it waits.
    for (let i = 0; i < 10 && h.offers().length < 2; i++) h.advance();
    assert.deepEqual(h.offers(), ['any', 'night']);
    const offeredAt = h.log[1].at;
    assert.equal(offeredAt, Date.parse('2026-06-01T23:00:00Z'), '01:00 CEST');
    assert.equal(h.rollout.status, 'running');
    // It does not report; the window closes after 1h. It is not failed while closed (deadline 3h).
    h.now = Date.parse('2026-06-02T12:00:00Z');
    h.step();
    assert.equal(h.asg.get('night')?.state, 'offered');
    // Next window opens 2026-06-02T23:00Z; 3h later the deadline falls inside a closed window: still waiting.
    h.now = Date.parse('2026-06-02T23:30:00Z');
    h.step();
    assert.equal(h.asg.get('night')?.state, 'offered');
    // It missed its window and a whole second one: now it has failed (at the latest as the window ends).
    h.now = Date.parse('2026-06-02T23:59:00Z');
    h.step();
    assert.equal(h.asg.get('night')?.state, 'failed');
    assert.equal(h.rollout.status, 'halted');
    // A window long enough for the deadline: a wave window override would apply, so test the default
    // deadline with the device's report missing inside an open window.
    const h2 = new Harness(
      parsePlan(`
name: ok
report_deadline: 30m
device_windows: { label: maint, windows: { night: { cron: "0 1 * * *", duration: 2h, timezone: Europe/Berlin } } }
waves: [{ name: all, size: 100%, max_failures: 0 }]
`),
      [dev('night', { maint: 'night' })],
      start,
    );
    h2.step();
    h2.advance(); // window opens, offered
    assert.deepEqual(h2.offers(), ['night']);
    h2.advance(); // deadline (30 min, inside the window)
    assert.equal(h2.asg.get('night')?.state, 'failed');
    assert.equal(h2.asg.get('night')?.reason, 'no report before the deadline');
    assert.equal(h2.rollout.status, 'halted');
  });

  it('windows can be set per wave, overriding the plan', () => {
    const p = parsePlan(`
name: w
window: { cron: "0 3 * * *", duration: 1h, timezone: UTC }
waves:
  - name: now
    size: 100%
    window: { cron: "* * * * *", duration: 1m, timezone: UTC }
`);
    assert.equal(p.waves[0].window?.cron, '* * * * *');
    const h = new Harness(p, [dev('a', {})], Date.parse('2026-06-01T10:00:00Z'));
    h.step();
    assert.deepEqual(h.offers(), ['a']);
  });
});

describe('scenario: emergency mode', () => {
  const plan = parsePlan(`
name: e
emergency: { bake_factor: 0.1 }
waves:
  - { name: canary, select: ring=canary, size: 1, bake: 10h }
  - { name: early, size: 1, bake: 5h }
  - { name: rest, size: 100%, bake: 0s }
`);
  const fleet = [dev('c1', { ring: 'canary' }), dev('a', {}), dev('b', {}), dev('c', {})];

  for (const emergency of [false, true]) {
    it(`${emergency ? 'emergency' : 'normal'}: every wave runs, bakes ×${emergency ? 0.1 : 1}`, () => {
      const h = new Harness(plan, fleet, 0, { emergency });
      h.step();
      const bakes: number[] = [];
      for (let i = 0; i < 20 && h.rollout.status !== 'completed'; i++) {
        const out = h.reportAll();
        if (out.rollout.status === 'baking') bakes.push(out.rollout.bakeUntil! - h.now);
        if (out.rollout.status === 'baking') h.advance();
      }
      assert.equal(h.rollout.status, 'completed');
      const waves = h.outs.flatMap((o) => o.transitions).filter((t) => /started/.test(t.why));
      assert.deepEqual(
        waves.map((t) => t.wave),
        [0, 1, 2],
        'no wave skipped',
      );
      const f = emergency ? 0.1 : 1;
      assert.deepEqual(bakes, [10 * H * f, 5 * H * f], 'the last wave bakes 0s and completes');
      assert.deepEqual(h.offers(), ['c1', 'a', 'b', 'c']);
    });
  }
});

describe('scenario: halt-and-rollback', () => {
  const plan = parsePlan(`
name: hr
on_failure: halt-and-rollback
waves:
  - { name: first, size: 2, max_failures: 0 }
  - { name: rest, size: 100% }
`);
  it('a failure reverts every exposed device; rolled-back once they report', () => {
    const fleet = [dev('a', {}), dev('b', {}, { version: '0.9' }), dev('c', {})];
    const h = new Harness(plan, fleet);
    h.step();
    h.report('a', 'succeeded');
    const out = h.reportAll(() => 'failed');
    assert.equal(out.rollout.status, 'rolling-back');
    const reverts = out.commands.filter((c) => c.kind === 'revert');
    assert.deepEqual(
      reverts.map((c) => [c.deviceId, c.kind === 'revert' ? c.version : '']),
      [
        ['a', '1.0'],
        ['b', '0.9'],
      ],
    );
    assert.equal(h.offers().includes('c'), false, 'nothing more exposed');
    h.report('a', 'succeeded', null, '1.0');
    h.step();
    assert.equal(h.rollout.status, 'rolling-back', 'b has not reported yet');
    h.report('b', 'succeeded', null, '0.9');
    h.step();
    assert.equal(h.rollout.status, 'rolled-back');
    assert.equal(h.asg.get('a')?.state, 'reverted');
  });

  it('rollback by hand does the same from a running rollout', () => {
    const h = new Harness(plan, [dev('a', {}), dev('b', {})]);
    h.step();
    const out = h.step([{ kind: 'rollback', actor: 'ops', reason: 'smells' }]);
    assert.equal(out.rollout.status, 'rolling-back');
    assert.equal(out.rollout.reason, 'smells');
    assert.equal(out.commands.filter((c) => c.kind === 'revert').length, 2);
  });
});

describe('scenario: approval gate', () => {
  it('waits for approval as long as it takes, offers nothing, then starts the wave', () => {
    const plan = parsePlan(`
name: ap
waves:
  - { name: canary, size: 1 }
  - { name: prod, size: 100%, approval: true }
`);
    const h = new Harness(plan, [dev('a', {}), dev('b', {}), dev('c', {})]);
    h.step();
    h.reportAll();
    assert.equal(h.rollout.status, 'awaiting-approval');
    h.now += 30 * D;
    const idle = h.step();
    assert.equal(idle.commands.length, 0);
    assert.equal(h.rollout.status, 'awaiting-approval');
    const out = h.step([{ kind: 'approve', actor: 'alice' }]);
    assert.equal(out.rollout.status, 'running');
    assert.deepEqual(h.offers(), ['a', 'b', 'c']);
    assert.ok(out.transitions.some((t) => /approved by alice/.test(t.why)));
  });
});

describe('scenario: release age gate', () => {
  it('does not start until the release is N days old', () => {
    const plan = parsePlan('name: age\nrelease_age: 3d\nwaves:\n  - { name: all, size: 100% }\n');
    const h = new Harness(plan, [dev('a', {})], 10 * D, { releaseCreatedAt: 9 * D });
    const out = h.step();
    assert.equal(out.rollout.status, 'pending');
    assert.equal(out.wakeAt, 12 * D);
    h.now = 12 * D - 1;
    h.step();
    assert.equal(h.offers().length, 0);
    h.now = 12 * D;
    h.step();
    assert.deepEqual(h.offers(), ['a']);
  });
});

describe('scenario: retry of transient failures', () => {
  const plan = parsePlan(`
name: rt
report_deadline: 10m
waves:
  - { name: all, size: 100%, max_failures: 0 }
`);
  /** Four devices: a fails its download, b its health check, c succeeds, d never reports. */
  const mixedFailures = (p: Plan) => {
    const h = new Harness(p, [dev('a', {}), dev('b', {}), dev('c', {}), dev('d', {})]);
    h.step();
    h.report('a', 'failed', 'download: connection reset');
    h.report('b', 'failed', 'health: probe failed');
    h.report('c', 'succeeded');
    h.advance(10 * 60_000); // d never reports
    return h;
  };
  it('re-offers download/timeout/no-report failures, not health failures', () => {
    const h = mixedFailures(plan);
    assert.equal(h.rollout.status, 'halted');
    assert.equal(h.asg.get('d')?.reason, 'no report before the deadline');
    // The health failure alone exceeds the budget of 0: a retry cannot pass the gate, so it changes nothing.
    const refused = h.step([{ kind: 'retry', actor: 'ops' }]);
    assert.equal(refused.commands.length, 0);
    assert.equal(h.rollout.status, 'halted');
    assert.equal(h.asg.get('a')?.state, 'failed');
  });

  it('re-offers download/timeout/no-report failures, not health failures, when the gate can still pass', () => {
    const lenient = parsePlan(
      'name: rt2\nreport_deadline: 10m\nwaves:\n  - { name: all, size: 100%, max_failures: 1 }\n',
    );
    const h = mixedFailures(lenient);
    assert.equal(h.rollout.status, 'halted');
    const out = h.step([{ kind: 'retry', actor: 'ops' }]);
    const reoffered = out.commands.filter((c) => c.kind === 'offer').map((c) => c.deviceId);
    assert.deepEqual(reoffered.sort(), ['a', 'd']);
    assert.equal(h.asg.get('b')?.state, 'failed', 'a health failure is not retried');
    assert.equal(h.rollout.status, 'running');
    h.reportAll();
    assert.equal(h.rollout.status, 'completed');
  });

  it('a retried rollout completes when the transient failures succeed', () => {
    const h = new Harness(plan, [dev('a', {}), dev('b', {})]);
    h.step();
    h.report('a', 'failed', 'timeout: download took too long');
    h.report('b', 'succeeded');
    h.step();
    assert.equal(h.rollout.status, 'halted');
    h.step([{ kind: 'retry', actor: 'ops' }]);
    assert.equal(h.rollout.status, 'running');
    h.reportAll();
    assert.equal(h.rollout.status, 'completed');
  });
});

describe('scenario: deferral and holds win', () => {
  it('a deferred device is offered only once its deferral ends, and never counts as failed', () => {
    const plan = parsePlan('name: df\nreport_deadline: 1h\nwaves:\n  - { name: all, size: 100% }\n');
    const h = new Harness(plan, [dev('a', {}), dev('b', {}, { deferredUntil: 5 * D })]);
    h.step();
    h.report('a', 'succeeded');
    h.advance();
    assert.deepEqual(h.offers(), ['a']);
    assert.equal(h.rollout.status, 'running');
    assert.equal(h.outs.at(-1)?.wakeAt, 5 * D);
    h.advance();
    assert.deepEqual(h.offers(), ['a', 'b']);
  });
});

describe('scenario: health reported during bake counts against the wave', () => {
  const plan = parsePlan(`
name: bake
waves:
  - { name: first, size: 2, bake: 1h, max_failures: 1, min_success: 100% }
  - { name: rest, size: 100% }
`);
  it('a device that turns unhealthy during bake fails the success gate at the end of the bake', () => {
    const h = new Harness(plan, [dev('a', {}), dev('b', {}), dev('c', {})]);
    h.step();
    h.reportAll();
    assert.equal(h.rollout.status, 'baking');
    h.report('a', 'failed', 'health: probe failed'); // after success, within the failure budget of 1
    h.step();
    assert.equal(h.rollout.status, 'baking', 'within budget: keeps baking');
    h.advance();
    assert.equal(h.rollout.status, 'halted');
    assert.match(h.rollout.reason ?? '', /1 of 2 succeeded, below the 100% gate/);
    assert.equal(h.offers().includes('c'), false);
  });

  it('a late failure in an earlier wave that exceeds its budget halts the current wave', () => {
    const p = parsePlan(`
name: late
waves:
  - { name: first, size: 1, max_failures: 0 }
  - { name: rest, size: 100%, max_concurrent: 1 }
`);
    const h = new Harness(p, [dev('a', {}), dev('b', {}), dev('c', {})]);
    h.step();
    h.reportAll();
    assert.equal(h.rollout.wave, 1);
    h.report('a', 'failed', 'health: crashed a day later');
    h.step();
    assert.equal(h.rollout.status, 'halted');
    assert.match(h.rollout.reason ?? '', /wave first: 1 of 1 devices failed/);
    assert.deepEqual(h.offers(), ['a', 'b'], 'c is never offered');
  });
});
