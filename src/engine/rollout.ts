// The rollout engine: a pure, deterministic step (state, fleet, events, now) → (state, assignments, commands).
// The server, the rehearsal simulator and the tests all run exactly this code. This file holds the step and
// the rollout's state transitions; the data types are in rollout-state.ts, choosing a wave's devices in
// wave-selection.ts, offering and deadlines in offers.ts, the failure and success gates in gates.ts.
import { AssignmentIndex, selectedOf } from './assignment-index.ts';
import { AssignmentOverlay } from './assignment-overlay.ts';
import { DeviceLookup, FleetNeeded } from './device-lookup.ts';
import { type EvidenceEvent, evidenceAction, finalLookState, keepEvidence } from './evidence.ts';
import {
  judgeMetric,
  judgeWave,
  keepMetricResult,
  overFailureBudget,
  retryWithinBudget,
  staleMetricGate,
} from './gates.ts';
import { expireOffers, type OfferContext, type OfferDecision, offerQueued, windowsAt } from './offers.ts';
import type { Plan, WaveSpec } from './plan.ts';
import {
  type Assignment,
  type Command,
  type DeviceView,
  type EngineEvent,
  isRetryableFailure,
  type MetricEvent,
  observedReverted,
  type RolloutState,
  type RolloutStatus,
  TERMINAL,
} from './rollout-state.ts';
import { selectWaveDevices } from './wave-selection.ts';

// The engine's public surface stays importable from here.
export { FleetNeeded } from './device-lookup.ts';
export {
  ACTIVE,
  type Assignment,
  type AssignmentState,
  applyReport,
  type Command,
  type DeviceOutcome,
  type DeviceView,
  type EngineEvent,
  eventRefusal,
  isRetryableFailure,
  type MetricEvent,
  type MetricGateResult,
  NO_REPORT,
  newRollout,
  type RolloutState,
  type RolloutStatus,
  TERMINAL,
} from './rollout-state.ts';

export interface Transition {
  from: RolloutStatus;
  to: RolloutStatus;
  wave: number;
  at: number;
  why: string;
}

/**
 * Engine at scale: a step reads counts and the open (queued, offered, reverting) assignments from an
 * AssignmentIndex rather than visiting every assignment, so a steady step costs what changed, not the fleet.
 * A caller that keeps its assignments between steps passes the index it keeps beside them (`index`, noted on
 * every change: AssignmentIndex.note); without one the step builds it (O(assignments)). Either way the step
 * is pure: it reads the map and the index and writes neither.
 */
export interface StepInput {
  plan: Plan;
  rollout: RolloutState;
  assignments: ReadonlyMap<string, Assignment>;
  /** Must describe exactly `assignments` (AssignmentIndex.of(assignments.values()) gives the same step). */
  index?: AssignmentIndex;
  devices: readonly DeviceView[];
  /**
   * `devices` holds only some devices (at least those the step will look at, see fleetNeedIds): the step throws
   * FleetNeeded when it needs one it was not given or the whole fleet, and the caller steps again with all.
   */
  partial?: boolean;
  events?: readonly EngineEvent[];
  now: number;
}

export interface StepOutput {
  rollout: RolloutState;
  changed: Assignment[]; // new or changed assignments, to persist
  commands: Command[];
  transitions: Transition[];
  wakeAt: number | null; // the next instant the step must run even if nothing is reported
}

class Stepper {
  readonly out: StepOutput;
  private readonly asg: AssignmentOverlay;
  private readonly devById: DeviceLookup;
  private readonly windowAt: OfferContext['window'];

  constructor(private readonly input: StepInput) {
    this.asg = new AssignmentOverlay(
      input.assignments,
      input.index ?? AssignmentIndex.of(input.assignments.values()),
    );
    this.devById = new DeviceLookup(input.devices, input.partial === true);
    this.windowAt = windowsAt(input.now);
    this.out = { rollout: { ...input.rollout }, changed: [], commands: [], transitions: [], wakeAt: null };
  }

  get r(): RolloutState {
    return this.out.rollout;
  }
  get now(): number {
    return this.input.now;
  }

  /** `isNew`: the device has no assignment in this rollout yet (a wave takes it). */
  private set(a: Assignment, isNew = false): void {
    this.asg.set(a.deviceId, a, isNew);
  }

  private wake(at: number): void {
    if (this.out.wakeAt === null || at < this.out.wakeAt) this.out.wakeAt = at;
  }

  private apply(d: OfferDecision): void {
    for (const a of d.changed) this.set(a);
    for (const c of d.commands) this.out.commands.push(c);
    if (d.wakeAt !== null) this.wake(d.wakeAt);
  }

  private go(to: RolloutStatus, why: string): void {
    const from = this.r.status;
    if (from === to) return;
    this.out.transitions.push({ from, to, wave: this.r.wave, at: this.now, why });
    this.r.status = to;
    if (TERMINAL.has(to)) this.r.finishedAt = this.now;
  }

  run(): StepOutput {
    for (const ev of this.input.events ?? []) this.event(ev);
    // Bounded loop: each pass either changes status/wave or stops; waves are finite.
    for (let guard = 0; guard < this.input.plan.waves.length * 4 + 8; guard++) {
      const before = `${this.r.status}/${this.r.wave}`;
      this.advance();
      if (`${this.r.status}/${this.r.wave}` === before) break;
    }
    // One row per device, in the order devices first changed: an assignment queued and offered in the same
    // step is persisted once, as offered.
    this.out.changed = this.asg.changes();
    return this.out;
  }

  private event(ev: EngineEvent): void {
    const s = this.r.status;
    switch (ev.kind) {
      case 'pause':
        if (s === 'running' || s === 'baking' || s === 'awaiting-approval' || s === 'pending') {
          this.r.pausedFrom = s;
          this.go('paused', `paused by ${ev.actor}`);
        }
        break;
      case 'resume':
        if (s === 'paused') {
          const to = this.r.pausedFrom ?? 'running';
          this.r.pausedFrom = null;
          this.r.finalLookAwaitedSince = null; // a final look awaited before the pause gets its whole grace again
          this.go(to, `resumed by ${ev.actor}`);
        } else if (s === 'halted') {
          // Resuming a halted rollout is an explicit operator override; the failures stay on record.
          this.r.reason = null;
          this.r.haltedAtWave = null;
          this.go('running', `resumed after halt by ${ev.actor}`);
        }
        break;
      case 'approve':
        if (s === 'awaiting-approval') {
          // Failures reported while it waited (health after success) still count: an approval never opens a
          // wave while an earlier wave's budget is spent.
          if (this.r.wave >= 0 && (this.checkFailures() || this.successGateFailed())) break;
          this.r.approved = [...this.r.approved, this.r.wave + 1];
          this.r.reason = null;
          // An evidence gate can ask for approval after the last wave: approving it completes the rollout.
          if (this.r.wave + 1 >= this.input.plan.waves.length) {
            this.go('completed', `all waves passed their gates (approved by ${ev.actor})`);
            break;
          }
          this.go('running', `wave ${this.input.plan.waves[this.r.wave + 1]?.name} approved by ${ev.actor}`);
          this.startWave(this.r.wave + 1);
        }
        break;
      case 'abort':
        if (s === 'rolling-back') {
          // Stop asking for reverts: devices not yet back stay where they are, and say so.
          const why = ev.reason ?? `revert abandoned by ${ev.actor}`;
          let left = 0;
          for (const a of [...this.asg.reverting()]) {
            this.set({ ...a, state: 'unconfirmed', reason: why });
            this.out.commands.push({ kind: 'withdraw', deviceId: a.deviceId, component: this.r.component });
            left++;
          }
          this.r.reason = `${why} (${left} devices had not confirmed their revert)`;
          this.go('aborted', this.r.reason);
        } else if (!TERMINAL.has(s)) {
          this.r.reason = ev.reason ?? `aborted by ${ev.actor}`;
          this.dropQueued('aborted');
          this.go('aborted', this.r.reason);
        }
        break;
      case 'retry':
        // Re-offers the release to devices whose failure was transient, in the current wave; on a
        // halted rollout this is an explicit operator override, like resume.
        if (s === 'running' || s === 'baking' || s === 'halted') this.retry(ev.actor);
        break;
      case 'rollback':
        if (s !== 'rolled-back' && s !== 'rolling-back') {
          this.r.reason = ev.reason ?? `rolled back by ${ev.actor}`;
          this.startRollback(this.r.reason);
        }
        break;
      case 'metric':
        this.metric(ev);
        break;
      case 'evidence':
        this.evidence(ev);
        break;
      case 'blamed':
        // Another rollout's evidence gate found this release behind its bad signal (attribution.ts). A halt, never
        // a rollback: attribution is an inference from another rollout's data, so an operator decides the rest.
        if (s === 'running' || s === 'baking' || s === 'awaiting-approval' || s === 'paused') {
          this.r.pausedFrom = null;
          this.halt(ev.why, 'halt');
        }
        break;
    }
  }

  /**
   * A look of the current wave's evidence gate while it bakes: kept for the status view and acted on (see
   * evidenceAction). Looks for another wave, from before its bake or when not baking are stale and ignored.
   */
  private evidence(ev: EvidenceEvent): void {
    const wave = this.input.plan.waves[ev.wave];
    if (this.r.status !== 'baking' || ev.wave !== this.r.wave || !wave?.compare) return;
    if (!Number.isFinite(ev.at) || ev.at < (this.r.bakeStartedAt ?? this.r.waveStartedAt ?? 0)) return;
    // Each look of a bake counts once (Bonferroni counts them): a repeat, e.g. from a second replica, is ignored.
    const bakeStart = this.r.bakeStartedAt ?? this.r.waveStartedAt ?? 0;
    const last = this.r.evidence?.find((k) => k.wave === ev.wave && k.at >= bakeStart);
    if (last && ev.look <= last.look) return;
    const at = Math.min(ev.at, this.now);
    const final = this.r.bakeUntil !== null && at >= this.r.bakeUntil;
    this.r.evidence = keepEvidence(this.r.evidence, {
      wave: ev.wave,
      look: ev.look,
      at,
      final,
      verdict: ev.verdict,
      signals: ev.signals,
    });
    const act = evidenceAction(wave, ev.wave, ev, final, this.r.extended ?? [], this.now);
    switch (act.kind) {
      case 'halt':
        this.halt(act.why, act.action);
        return;
      case 'inconclusive':
        this.haltInconclusive(act.why);
        return;
      case 'extend':
        this.r.extended = [...(this.r.extended ?? []), ev.wave];
        this.r.bakeUntil = act.until;
        this.r.finalLookAwaitedSince = null;
        this.out.transitions.push({
          from: 'baking',
          to: 'baking',
          wave: ev.wave,
          at: this.now,
          why: act.why,
        });
        this.wake(act.until);
        return;
      case 'approval':
        this.r.bakeUntil = null;
        this.r.reason = act.why;
        this.go('awaiting-approval', act.why);
        return;
      case 'none':
        return;
    }
  }

  /** At the end of the bake: false while the evidence gate's final look is awaited (or halts when it is stale). */
  private finalLookPassed(): boolean {
    const wave = this.input.plan.waves[this.r.wave];
    const until = this.r.bakeUntil ?? this.now;
    // The grace runs from when a step first found the bake over without its look, not from the bake's end: a
    // rollout resumed after a long pause, or a server back after downtime, gives the evaluator its full grace.
    if (this.input.plan.waves[this.r.wave]?.compare && this.r.finalLookAwaitedSince == null)
      this.r.finalLookAwaitedSince = this.now;
    const since = Math.max(until, this.r.finalLookAwaitedSince ?? until);
    const st = finalLookState(wave, this.r.wave, this.r.evidence, until, since, this.now);
    if (st.kind === 'go') return true;
    if (st.kind === 'wait') this.wake(st.until);
    else this.haltInconclusive(st.why);
    return false;
  }

  /**
   * A metric gate's result for the current wave while it runs or bakes: kept for the status view; a breach halts
   * (or halts and rolls back, per the gate), no value halts without rolling back. Results for another wave, an
   * unknown gate or from before the wave started are stale and ignored.
   */
  private metric(ev: MetricEvent): void {
    const s = this.r.status;
    if (ev.wave !== this.r.wave || (s !== 'running' && s !== 'baking')) return;
    const wave = this.input.plan.waves[ev.wave];
    const gate = wave?.metrics?.find((g) => g.name === ev.name);
    if (!gate || !Number.isFinite(ev.at) || ev.at < (this.r.waveStartedAt ?? 0)) return;
    const finite = typeof ev.value === 'number' && Number.isFinite(ev.value);
    const value = finite ? (ev.value as number) : null;
    const error = finite ? undefined : String(ev.error ?? 'not a finite number').slice(0, 200);
    const v = judgeMetric(wave, gate, value, error);
    const at = Math.min(ev.at, this.now);
    this.r.metricGates = keepMetricResult(this.r.metricGates, {
      wave: ev.wave,
      name: gate.name,
      value,
      error: error ?? null,
      at,
      state: v.state,
    });
    if (v.state === 'breached') this.halt(v.why, gate.onBreach);
    else if (v.state === 'inconclusive') this.haltInconclusive(v.why);
  }

  /** Halts for a metric gate of the current wave that has gone without a result too long; true when it did. */
  private metricGateStale(bakeOver: boolean): boolean {
    const wave = this.input.plan.waves[this.r.wave];
    if (!wave?.metrics?.length) return false;
    const factor = this.r.emergency ? this.input.plan.emergencyBakeFactor : 1;
    const bakeStartedAt =
      this.r.bakeStartedAt ?? (this.r.bakeUntil ?? this.now) - Math.round(wave.bakeMs * factor);
    const stale = staleMetricGate(
      wave,
      this.r.wave,
      this.r.metricGates,
      bakeStartedAt,
      this.r.waveStartedAt ?? 0,
      bakeOver,
      this.now,
    );
    if (stale.why !== null) {
      this.haltInconclusive(stale.why);
      return true;
    }
    if (stale.wakeAt !== null && !bakeOver) this.wake(stale.wakeAt);
    return false;
  }

  /** Stops exposure without rolling back what may be healthy (too little evidence to judge). */
  private haltInconclusive(why: string): void {
    this.r.reason = why;
    this.r.haltedAtWave = this.r.wave;
    this.dropQueued('rollout halted');
    this.go('halted', why);
  }

  private retry(actor: string): void {
    const inFleet = (id: string) => this.devById.has(id);
    if (!retryWithinBudget(this.input.plan.waves, this.r.wave, this.asg.values(), inFleet)) return;
    let n = 0;
    for (const a of [...this.asg.values()])
      if (a.state === 'failed' && isRetryableFailure(a) && inFleet(a.deviceId)) {
        this.set({
          ...a,
          wave: this.r.wave,
          state: 'queued',
          outcome: null,
          offeredAt: null,
          reportedAt: null,
          reason: null,
        });
        n++;
      }
    if (n === 0) return;
    this.r.reason = null;
    this.r.haltedAtWave = null;
    this.r.bakeUntil = null;
    this.go('running', `${n} devices with transient failures retried by ${actor}`);
  }

  private dropQueued(why: string): void {
    for (const w of this.asg.waves())
      for (const a of [...this.asg.queued(w)]) this.set({ ...a, state: 'skipped', reason: why });
  }

  private halt(why: string, action: Plan['onFailure'] = this.input.plan.onFailure): void {
    this.r.reason = why;
    this.r.haltedAtWave = this.r.wave;
    this.dropQueued('rollout halted');
    if (action === 'halt-and-rollback') this.startRollback(why);
    else this.go('halted', why);
  }

  private startRollback(why: string): void {
    this.dropQueued('rollout rolled back');
    let pending = 0;
    for (const a of [...this.asg.values()]) {
      // `unconfirmed` too: a rollback after an abandoned revert (abort while rolling back) asks again.
      if (
        a.state === 'offered' ||
        a.state === 'succeeded' ||
        a.state === 'failed' ||
        a.state === 'unconfirmed'
      ) {
        // A device another active rollout of this component owns now (after this one completed) is left to
        // it: reverting it here would put it in two rollouts at once with conflicting orders.
        if (this.devById.get(a.deviceId)?.busy) {
          this.set({ ...a, state: 'skipped', reason: 'owned by a newer rollout; not reverted' });
          continue;
        }
        this.out.commands.push({
          kind: 'revert',
          deviceId: a.deviceId,
          component: this.r.component,
          version: a.fromVersion,
        });
        // A device that reported rolling the release back by itself is back already: its report confirms it.
        if (a.outcome === 'rolled-back') {
          this.set({ ...a, state: 'reverted', reason: why, reportedAt: this.now });
          continue;
        }
        // offeredAt now marks when the revert was offered: the revert deadline runs from here.
        this.set({ ...a, state: 'reverting', reason: why, offeredAt: this.now });
        pending++;
      } else if (a.state === 'reverting') pending++;
    }
    this.go(pending > 0 ? 'rolling-back' : 'rolled-back', why);
  }

  private advance(): void {
    const plan = this.input.plan;
    switch (this.r.status) {
      case 'pending': {
        const ageOk = this.now - this.r.releaseCreatedAt >= plan.releaseAgeMs;
        if (!ageOk) {
          this.wake(this.r.releaseCreatedAt + plan.releaseAgeMs);
          return;
        }
        this.nextWave();
        return;
      }
      case 'running':
        this.runWave();
        return;
      case 'baking': {
        if (this.checkFailures()) return;
        const bakeOver = !(this.r.bakeUntil !== null && this.now < this.r.bakeUntil);
        if (this.metricGateStale(bakeOver)) return;
        if (!bakeOver && this.r.bakeUntil !== null) {
          this.wake(this.r.bakeUntil);
          return;
        }
        if (this.successGateFailed()) return; // health reported during bake counts against the wave
        if (!this.finalLookPassed()) return;
        this.nextWave();
        return;
      }
      case 'rolling-back': {
        // A device that never confirms its revert must not hold the rollout in rolling-back forever.
        let left = 0;
        let unconfirmed = 0;
        for (const w of this.asg.waves()) unconfirmed += this.asg.tally(w).unconfirmed;
        for (const a of [...this.asg.reverting()]) {
          // Confirmed by observation: the device checked in on its previous release with nothing open.
          if (observedReverted(a, this.devById.get(a.deviceId))) {
            this.set({ ...a, state: 'reverted', reportedAt: this.now });
            continue;
          }
          const deadline = plan.waves[a.wave]?.reportDeadlineMs ?? 0;
          const due = (a.offeredAt ?? this.now) + deadline;
          if (this.now >= due) {
            this.set({ ...a, state: 'unconfirmed', reason: 'no revert confirmation before the deadline' });
            unconfirmed++;
          } else {
            left++;
            this.wake(due);
          }
        }
        if (left === 0) {
          const why = this.r.reason ?? 'rolled back';
          this.go(
            'rolled-back',
            unconfirmed ? `${why} (${unconfirmed} devices did not confirm their revert)` : why,
          );
        }
        return;
      }
      case 'awaiting-approval':
        // Late failures halt it as they would a running rollout (budget, then the wave's gate); it assigns nothing.
        if (this.r.wave >= 0 && !this.checkFailures()) this.successGateFailed();
        return;
      default:
        return; // paused, halted and terminal states assign nothing
    }
  }

  private nextWave(): void {
    const next = this.r.wave + 1;
    if (next >= this.input.plan.waves.length) {
      this.go('completed', 'all waves passed their gates');
      return;
    }
    if (this.input.plan.waves[next].approval && !this.r.approved.includes(next)) {
      this.r.bakeUntil = null;
      this.go('awaiting-approval', `wave ${this.input.plan.waves[next].name} needs approval`);
      return;
    }
    this.startWave(next);
  }

  /** Queues the wave's devices (see wave-selection.ts) and makes it the current wave. */
  private startWave(index: number): void {
    const wave = this.input.plan.waves[index];
    if (this.input.partial) throw new FleetNeeded(`wave ${wave.name} starts`);
    const { chosen, without, already } = selectWaveDevices(
      wave,
      this.input.devices,
      this.asg,
      this.r.version,
    );
    const n = chosen.length;
    const skip = (d: DeviceView, reason: string) =>
      this.set(
        {
          deviceId: d.id,
          wave: index,
          state: 'skipped',
          fromVersion: d.version,
          offeredAt: null,
          reportedAt: null,
          reason,
        },
        true,
      );
    for (const d of without) skip(d, `does not run ${this.r.component}`);
    for (const d of already) skip(d, `already runs ${this.r.version}`);
    const queued: Assignment[] = new Array(chosen.length);
    for (let i = 0; i < chosen.length; i++) {
      const d = chosen[i];
      queued[i] = {
        deviceId: d.id,
        wave: index,
        state: 'queued',
        fromVersion: d.version,
        offeredAt: null,
        reportedAt: null,
        reason: null,
      };
    }
    // Queued without being written yet: if this step offers the wave at once, each device is written once.
    this.asg.queueNew(index, queued, chosen);
    this.r.wave = index;
    this.r.waveStartedAt = this.now;
    this.r.bakeUntil = null;
    this.r.bakeStartedAt = null;
    if (this.r.status !== 'running') this.go('running', `wave ${wave.name} started with ${n} devices`);
    else
      this.out.transitions.push({
        from: 'running',
        to: 'running',
        wave: index,
        at: this.now,
        why: `wave ${wave.name} started with ${n} devices`,
      });
  }

  /** Halts when a started wave's failures exceed its budget; true when it did. */
  private checkFailures(): boolean {
    const why = overFailureBudget(this.input.plan.waves, this.r.wave, (w) => this.asg.tally(w));
    if (why === null) return false;
    this.halt(why);
    return true;
  }

  /** Halts when the current wave's evidence or success ratio is below its gate; true when it did. */
  private successGateFailed(): boolean {
    const verdict = judgeWave(this.input.plan.waves[this.r.wave], this.asg.tally(this.r.wave));
    if (verdict.kind === 'passed') return false;
    if (verdict.kind === 'failed') {
      this.halt(verdict.why);
      return true;
    }
    // Inconclusive: stop exposure, but do not roll back what may be healthy.
    this.haltInconclusive(verdict.why);
    return true;
  }

  private offerContext(wave: WaveSpec): OfferContext {
    return {
      plan: this.input.plan,
      wave,
      now: this.now,
      device: (id) => this.devById.get(id),
      window: this.windowAt,
    };
  }

  private runWave(): void {
    const wave = this.input.plan.waves[this.r.wave];
    const ctx = this.offerContext(wave);
    const w = this.r.wave;
    this.apply(expireOffers(ctx, this.asg.offeredGroups(w)));
    if (this.checkFailures()) return;
    const offered = {
      count: this.asg.tally(w).offered,
      each: () => [...this.asg.offeredGroups(w).values()].flatMap((g) => [...g]),
    };
    // A wave this step started offers from the list it queued, with its devices at hand: each device's
    // assignment is written once (offered, or still queued), in queue order.
    const fresh = this.asg.takeNew(w);
    if (fresh) {
      const d = offerQueued(ctx, fresh, offered, this.r);
      let j = 0;
      for (const a of fresh.assignments) {
        const next = j < d.changed.length && d.changed[j].deviceId === a.deviceId ? d.changed[j++] : a;
        this.asg.setTaken(a, next);
      }
      this.apply({ ...d, changed: [] });
    } else this.apply(offerQueued(ctx, { assignments: this.asg.queued(w) }, offered, this.r));
    const t = this.asg.tally(w);
    if (t.queued + t.offered > 0) return;
    if (this.successGateFailed()) return;
    const selected = selectedOf(t);
    const succeeded = t.succeeded;
    const factor = this.r.emergency ? this.input.plan.emergencyBakeFactor : 1;
    this.r.bakeUntil = this.now + Math.round(wave.bakeMs * factor);
    this.r.bakeStartedAt = this.now;
    this.r.finalLookAwaitedSince = null;
    this.go('baking', `wave ${wave.name} passed its gate (${succeeded}/${selected}); baking`);
    this.wake(this.r.bakeUntil);
  }
}

/** Runs one engine step. Pure: the same input always gives the same output. */
export function step(input: StepInput): StepOutput {
  return new Stepper(input).run();
}
