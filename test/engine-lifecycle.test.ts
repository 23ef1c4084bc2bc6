// The end of a rollout, pure: reverts confirmed by observed state, abort while rolling back, refusals that name
// the state, and devices that do not run the component.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  applyReport,
  type DeviceView,
  type EngineEvent,
  eventRefusal,
  newRollout,
  type RolloutState,
  type StepOutput,
  step,
} from '../src/engine/rollout.ts';

const PLAN = parsePlan(`
name: t
report_deadline: 30m
on_failure: halt-and-rollback
waves:
  - name: canary
    size: 2
    bake: 1h
`);

function device(id: string, over: Partial<DeviceView> = {}): DeviceView {
  return { id, labels: {}, held: false, pinned: false, busy: false, version: '1', settled: true, ...over };
}

/** A small rollout driven by hand: step, then change the fleet or feed reports like the server does. */
class Harness {
  rollout: RolloutState = newRollout({ id: 'r', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
  readonly assignments = new Map<string, Assignment>();
  now = 0;
  constructor(public devices: DeviceView[]) {}

  step(events: EngineEvent[] = []): StepOutput {
    const out = step({
      plan: PLAN,
      rollout: this.rollout,
      assignments: this.assignments,
      devices: this.devices,
      events,
      now: this.now,
    });
    this.rollout = out.rollout;
    for (const a of out.changed) this.assignments.set(a.deviceId, a);
    this.now += 1000;
    return out;
  }

  report(id: string, outcome: 'succeeded' | 'failed' | 'rolled-back', version = '2'): void {
    const next = applyReport(this.assignments.get(id)!, { outcome, version, target: '2', at: this.now });
    if (next) this.assignments.set(id, next);
  }

  set(id: string, over: Partial<DeviceView>): void {
    this.devices = this.devices.map((d) => (d.id === id ? { ...d, ...over } : d));
  }
}

describe('closing a failed rollout', () => {
  it("confirms a device's own rollback by its report, and another device by a check-in after the revert", () => {
    const h = new Harness([device('a'), device('b')]);
    h.step(); // wave starts, both offered
    h.set('b', { version: '2', settled: false, seenAt: h.now }); // b is mid-transaction on the bad release
    h.report('a', 'rolled-back'); // a undid it by itself: its report says it is back
    let out = h.step();
    assert.equal(h.rollout.status, 'rolling-back');
    assert.equal(h.assignments.get('a')?.state, 'reverted', 'its own rollback report confirms it');
    assert.equal(h.assignments.get('a')?.outcome, 'rolled-back', 'its own verdict is kept');
    assert.equal(h.assignments.get('b')?.state, 'reverting');
    assert.ok(
      out.commands.some((c) => c.kind === 'revert' && c.deviceId === 'a'),
      'the revert is still ordered',
    );
    out = h.step();
    assert.equal(h.rollout.status, 'rolling-back', 'b is not back yet');
    h.set('b', { version: '1', settled: true, seenAt: h.now }); // b checked in back on 1 (no report)
    out = h.step();
    assert.equal(h.rollout.status, 'rolled-back');
    assert.equal(out.transitions.at(-1)?.to, 'rolled-back');
    assert.doesNotMatch(h.rollout.reason ?? '', /did not confirm/);
  });

  it('does not count a device that was last seen before the revert, whatever it showed then', () => {
    // The check-in that delivered the release showed the old version; the device then crashed for good.
    const h = new Harness([device('a', { seenAt: 0 }), device('b', { seenAt: 0 })]);
    h.step();
    h.report('a', 'failed'); // a refused or failed (not a rollback report): it must be seen back
    h.step();
    assert.equal(h.rollout.status, 'rolling-back');
    assert.deepEqual(
      [h.assignments.get('a')?.state, h.assignments.get('b')?.state],
      ['reverting', 'reverting'],
      'both show version 1 and settled, but from before the revert',
    );
    h.now += 31 * 60_000;
    const out = h.step();
    assert.equal(h.rollout.status, 'rolled-back');
    assert.match(out.transitions.at(-1)?.why ?? '', /2 devices did not confirm/);
  });

  it('counts a first install reverted when the device runs no version again', () => {
    const h = new Harness([device('a', { version: null }), device('b', { version: null })]);
    h.step();
    h.report('a', 'rolled-back');
    h.step();
    assert.equal(h.assignments.get('a')?.state, 'reverted');
    h.set('b', { version: null, settled: true, seenAt: h.now });
    h.step();
    assert.equal(h.rollout.status, 'rolled-back');
    assert.deepEqual(
      [...h.assignments.values()].map((a) => a.state),
      ['reverted', 'reverted'],
    );
  });

  it('waits for a device that is seen on the bad release, until the revert deadline', () => {
    const h = new Harness([device('a'), device('b')]);
    h.step();
    h.report('a', 'failed');
    h.step();
    h.set('b', { version: '2', settled: true, seenAt: h.now }); // b switched and stays on the bad release
    h.step();
    assert.equal(h.assignments.get('b')?.state, 'reverting', 'b is settled, but on the bad release');
    h.now += 31 * 60_000;
    const out = h.step();
    assert.equal(h.rollout.status, 'rolled-back');
    assert.match(out.transitions.at(-1)?.why ?? '', /did not confirm/);
    assert.equal(h.assignments.get('b')?.state, 'unconfirmed');
  });

  it('aborts while rolling back: stops asking for reverts; a later rollback asks again', () => {
    const h = new Harness([device('a'), device('b')]);
    h.step();
    h.set('b', { version: '2', settled: false }); // b installs the release and is still on it
    h.report('a', 'failed');
    h.step();
    assert.equal(h.rollout.status, 'rolling-back');
    assert.equal(eventRefusal(h.rollout.status, 'abort'), null);
    let out = h.step([{ kind: 'abort', actor: 'ops' }]);
    assert.equal(h.rollout.status, 'aborted');
    assert.match(h.rollout.reason ?? '', /revert abandoned by ops \(2 devices had not confirmed/);
    assert.deepEqual(
      out.commands
        .filter((c) => c.kind === 'withdraw')
        .map((c) => c.deviceId)
        .sort(),
      ['a', 'b'],
    );
    assert.equal(h.assignments.get('b')?.state, 'unconfirmed');
    out = h.step([{ kind: 'rollback', actor: 'ops' }]);
    assert.equal(h.rollout.status, 'rolling-back');
    assert.deepEqual(
      out.commands
        .filter((c) => c.kind === 'revert')
        .map((c) => c.deviceId)
        .sort(),
      ['a', 'b'],
      'the abandoned reverts are ordered again',
    );
  });

  it('counts a device that never reported before the deadline as failed', () => {
    const h = new Harness([device('a'), device('b')]);
    h.step();
    h.now += 31 * 60_000;
    h.step();
    assert.equal(h.assignments.get('a')?.outcome, 'failed');
  });

  it('names the state when an operator action cannot apply', () => {
    assert.equal(eventRefusal('rolling-back', 'pause'), 'cannot pause a rollout that is rolling-back');
    assert.equal(eventRefusal('completed', 'abort'), 'cannot abort a rollout that is completed');
    assert.equal(eventRefusal('rolled-back', 'rollback'), 'cannot rollback a rollout that is rolled-back');
    assert.equal(eventRefusal('halted', 'resume'), null);
    assert.equal(eventRefusal('awaiting-approval', 'approve'), null);
  });
});

describe('targeting', () => {
  it('never offers a component to a device that does not run it, and records it as skipped', () => {
    const h = new Harness([device('a'), device('b', { hasComponent: false }), device('c')]);
    const out = h.step();
    assert.deepEqual(
      out.commands.filter((c) => c.kind === 'offer').map((c) => c.deviceId),
      ['a', 'c'],
    );
    assert.equal(h.assignments.get('b')?.state, 'skipped');
    assert.equal(h.assignments.get('b')?.reason, 'does not run c');
  });
});
