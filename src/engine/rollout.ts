// The rollout engine: a pure, deterministic step (state, fleet, events, now) → (state, assignments, commands).
// The server, the rehearsal simulator and the tests all run exactly this code.
import { type Plan, resolveAmount, type WaveSpec } from './plan.ts';
import { type Labels, matches, parseSelector } from './selector.ts';
import { windowOpen } from './window.ts';

export type RolloutStatus =
  | 'pending'
  | 'running'
  | 'baking'
  | 'awaiting-approval'
  | 'paused'
  | 'halted'
  | 'completed'
  | 'aborted'
  | 'rolling-back'
  | 'rolled-back';

export const TERMINAL: ReadonlySet<RolloutStatus> = new Set(['completed', 'aborted', 'rolled-back']);
/** States in which the rollout still owns its devices (one component, one rollout per device). */
export const ACTIVE: ReadonlySet<RolloutStatus> = new Set([
  'pending',
  'running',
  'baking',
  'awaiting-approval',
  'paused',
  'halted',
  'rolling-back',
]);

export interface RolloutState {
  id: string;
  component: string;
  version: string;
  status: RolloutStatus;
  wave: number; // index of the current wave; -1 before the first starts
  waveStartedAt: number | null;
  bakeUntil: number | null;
  pausedFrom: RolloutStatus | null;
  approved: number[]; // waves an operator approved
  emergency: boolean;
  releaseCreatedAt: number;
  createdAt: number;
  finishedAt: number | null;
  reason: string | null; // why it halted, aborted or rolled back
  haltedAtWave: number | null;
}

export type AssignmentState =
  | 'queued'
  | 'offered'
  | 'succeeded'
  | 'failed'
  | 'skipped'
  | 'reverting'
  | 'reverted';

export interface Assignment {
  deviceId: string;
  wave: number;
  state: AssignmentState;
  fromVersion: string | null;
  offeredAt: number | null;
  reportedAt: number | null;
  reason: string | null;
}

export interface DeviceView {
  id: string;
  labels: Labels;
  held: boolean; // operator or device hold: never offered anything
  pinned: boolean; // pinned to a version of this component
  busy: boolean; // owned by another active rollout of this component
  version: string | null; // version of this component the device runs now
}

export type EngineEvent =
  | { kind: 'pause'; actor: string }
  | { kind: 'resume'; actor: string }
  | { kind: 'abort'; actor: string; reason?: string }
  | { kind: 'approve'; actor: string }
  | { kind: 'rollback'; actor: string; reason?: string };

export type Command =
  | { kind: 'offer'; deviceId: string; component: string; version: string }
  | { kind: 'revert'; deviceId: string; component: string; version: string | null }
  | { kind: 'withdraw'; deviceId: string; component: string };

export interface Transition {
  from: RolloutStatus;
  to: RolloutStatus;
  wave: number;
  at: number;
  why: string;
}

export interface StepInput {
  plan: Plan;
  rollout: RolloutState;
  assignments: ReadonlyMap<string, Assignment>;
  devices: readonly DeviceView[];
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

/** A fresh rollout state, before its first step. */
export function newRollout(init: {
  id: string;
  component: string;
  version: string;
  emergency?: boolean;
  releaseCreatedAt: number;
  now: number;
}): RolloutState {
  return {
    id: init.id,
    component: init.component,
    version: init.version,
    status: 'pending',
    wave: -1,
    waveStartedAt: null,
    bakeUntil: null,
    pausedFrom: null,
    approved: [],
    emergency: init.emergency ?? false,
    releaseCreatedAt: init.releaseCreatedAt,
    createdAt: init.now,
    finishedAt: null,
    reason: null,
    haltedAtWave: null,
  };
}

/** Applies a device's report to its assignment (pure); returns null when the report does not apply. */
export function applyReport(
  a: Assignment,
  r: { outcome: 'succeeded' | 'failed'; version: string; target: string; reason?: string | null; at: number },
): Assignment | null {
  if (a.state === 'reverting') {
    // A revert is done when the device reports anything but the rolled-back release as healthy.
    if (r.outcome === 'succeeded' && r.version !== r.target)
      return { ...a, state: 'reverted', reportedAt: r.at };
    if (r.outcome === 'failed' && r.version === r.target)
      return { ...a, state: 'reverted', reportedAt: r.at };
    return null;
  }
  if (r.version !== r.target) return null;
  if (a.state === 'offered' || (a.state === 'succeeded' && r.outcome === 'failed')) {
    // A failure after success (health during bake) still counts against the wave.
    return { ...a, state: r.outcome, reportedAt: r.at, reason: r.reason ?? null };
  }
  return null;
}

function failureBudgetExceeded(wave: WaveSpec, failed: number, selected: number): boolean {
  if ('count' in wave.maxFailures) return failed > wave.maxFailures.count;
  return selected > 0 && (failed * 100) / selected > wave.maxFailures.percent;
}

class Stepper {
  readonly out: StepOutput;
  private readonly asg: Map<string, Assignment>;
  private readonly devById: Map<string, DeviceView>;

  constructor(private readonly input: StepInput) {
    this.asg = new Map(input.assignments);
    this.devById = new Map(input.devices.map((d) => [d.id, d]));
    this.out = { rollout: { ...input.rollout }, changed: [], commands: [], transitions: [], wakeAt: null };
  }

  get r(): RolloutState {
    return this.out.rollout;
  }
  get now(): number {
    return this.input.now;
  }

  private set(a: Assignment): void {
    this.asg.set(a.deviceId, a);
    this.out.changed.push(a);
  }

  private wake(at: number): void {
    if (this.out.wakeAt === null || at < this.out.wakeAt) this.out.wakeAt = at;
  }

  private go(to: RolloutStatus, why: string): void {
    const from = this.r.status;
    if (from === to) return;
    this.out.transitions.push({ from, to, wave: this.r.wave, at: this.now, why });
    this.r.status = to;
    if (TERMINAL.has(to)) this.r.finishedAt = this.now;
  }

  private waveAssignments(wave: number): Assignment[] {
    const list: Assignment[] = [];
    for (const a of this.asg.values()) if (a.wave === wave) list.push(a);
    return list;
  }

  run(): StepOutput {
    for (const ev of this.input.events ?? []) this.event(ev);
    // Bounded loop: each pass either changes status/wave or stops; waves are finite.
    for (let guard = 0; guard < this.input.plan.waves.length * 4 + 8; guard++) {
      const before = `${this.r.status}/${this.r.wave}`;
      this.advance();
      if (`${this.r.status}/${this.r.wave}` === before) break;
    }
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
          this.r.approved = [...this.r.approved, this.r.wave + 1];
          this.go('running', `wave ${this.input.plan.waves[this.r.wave + 1]?.name} approved by ${ev.actor}`);
          this.startWave(this.r.wave + 1);
        }
        break;
      case 'abort':
        if (!TERMINAL.has(s) && s !== 'rolling-back') {
          this.r.reason = ev.reason ?? `aborted by ${ev.actor}`;
          this.dropQueued('aborted');
          this.go('aborted', this.r.reason);
        }
        break;
      case 'rollback':
        if (s !== 'rolled-back' && s !== 'rolling-back') {
          this.r.reason = ev.reason ?? `rolled back by ${ev.actor}`;
          this.startRollback(this.r.reason);
        }
        break;
    }
  }

  private dropQueued(why: string): void {
    for (const a of [...this.asg.values()])
      if (a.state === 'queued') this.set({ ...a, state: 'skipped', reason: why });
  }

  private halt(why: string): void {
    this.r.reason = why;
    this.r.haltedAtWave = this.r.wave;
    this.dropQueued('rollout halted');
    if (this.input.plan.onFailure === 'halt-and-rollback') this.startRollback(why);
    else this.go('halted', why);
  }

  private startRollback(why: string): void {
    this.dropQueued('rollout rolled back');
    let pending = 0;
    for (const a of [...this.asg.values()]) {
      if (a.state === 'offered' || a.state === 'succeeded' || a.state === 'failed') {
        this.set({ ...a, state: 'reverting', reason: why });
        this.out.commands.push({
          kind: 'revert',
          deviceId: a.deviceId,
          component: this.r.component,
          version: a.fromVersion,
        });
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
        if (this.r.bakeUntil !== null && this.now < this.r.bakeUntil) {
          this.wake(this.r.bakeUntil);
          return;
        }
        this.nextWave();
        return;
      }
      case 'rolling-back': {
        const left = [...this.asg.values()].some((a) => a.state === 'reverting');
        if (!left) this.go('rolled-back', this.r.reason ?? 'rolled back');
        return;
      }
      default:
        return; // paused, halted, awaiting-approval and terminal states assign nothing
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

  /** Chooses the wave's devices: matching, not yet in this rollout, free to take it; ordered and sized. */
  private startWave(index: number): void {
    const wave = this.input.plan.waves[index];
    const sel = parseSelector(wave.select);
    const order = wave.order.map(parseSelector);
    const candidates = this.input.devices.filter(
      (d) => !this.asg.has(d.id) && !d.held && !d.pinned && !d.busy && matches(sel, d.labels),
    );
    const rank = (d: DeviceView) => {
      const i = order.findIndex((o) => matches(o, d.labels));
      return i < 0 ? order.length : i;
    };
    candidates.sort((a, b) => rank(a) - rank(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const n = Math.min(candidates.length, resolveAmount(wave.size, candidates.length));
    for (let i = 0; i < n; i++) {
      const d = candidates[i];
      this.set({
        deviceId: d.id,
        wave: index,
        state: 'queued',
        fromVersion: d.version,
        offeredAt: null,
        reportedAt: null,
        reason: null,
      });
    }
    this.r.wave = index;
    this.r.waveStartedAt = this.now;
    this.r.bakeUntil = null;
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

  /** Halts when the current wave's failures exceed its budget; true when it did. */
  private checkFailures(): boolean {
    const wave = this.input.plan.waves[this.r.wave];
    const list = this.waveAssignments(this.r.wave);
    const failed = list.filter((a) => a.state === 'failed').length;
    const selected = list.filter((a) => a.state !== 'skipped').length;
    if (failureBudgetExceeded(wave, failed, selected)) {
      this.halt(`wave ${wave.name}: ${failed} of ${selected} devices failed, over the failure budget`);
      return true;
    }
    return false;
  }

  private runWave(): void {
    const wave = this.input.plan.waves[this.r.wave];
    // Deadline: an offered device that has not reported in time counts as failed.
    for (const a of this.waveAssignments(this.r.wave)) {
      if (a.state !== 'offered' || a.offeredAt === null) continue;
      const due = a.offeredAt + wave.reportDeadlineMs;
      if (this.now >= due)
        this.set({ ...a, state: 'failed', reportedAt: this.now, reason: 'no report before the deadline' });
      else this.wake(due);
    }
    if (this.checkFailures()) return;
    this.offerQueued(wave);
    const list = this.waveAssignments(this.r.wave);
    const open = list.some((a) => a.state === 'queued' || a.state === 'offered');
    if (open) return;
    const selected = list.filter((a) => a.state !== 'skipped').length;
    const succeeded = list.filter((a) => a.state === 'succeeded').length;
    if (selected > 0 && (succeeded * 100) / selected < wave.minSuccessPercent) {
      this.halt(
        `wave ${wave.name}: ${succeeded} of ${selected} succeeded, below the ${wave.minSuccessPercent}% gate`,
      );
      return;
    }
    const factor = this.r.emergency ? this.input.plan.emergencyBakeFactor : 1;
    this.r.bakeUntil = this.now + Math.round(wave.bakeMs * factor);
    this.go('baking', `wave ${wave.name} passed its gate (${succeeded}/${selected}); baking`);
    this.wake(this.r.bakeUntil);
  }

  private offerQueued(wave: WaveSpec): void {
    const list = this.waveAssignments(this.r.wave);
    let inFlight = 0;
    const perGroup = new Map<string, number>();
    const groupOf = (id: string) =>
      wave.maxConcurrentPer ? (this.devById.get(id)?.labels[wave.maxConcurrentPer.label] ?? '') : '';
    for (const a of list) {
      if (a.state !== 'offered') continue;
      inFlight++;
      const g = groupOf(a.deviceId);
      perGroup.set(g, (perGroup.get(g) ?? 0) + 1);
    }
    for (const a of list) {
      if (a.state !== 'queued') continue;
      if (wave.maxConcurrent !== null && inFlight >= wave.maxConcurrent) break;
      const d = this.devById.get(a.deviceId);
      if (!d) {
        this.set({ ...a, state: 'skipped', reason: 'device no longer in the fleet' });
        continue;
      }
      if (d.held || d.pinned) continue; // holds and pins win: wait, never force
      if (wave.window) {
        const w = windowOpen(wave.window, this.now);
        if (!w.open) {
          this.wake(w.nextChange);
          continue;
        }
      }
      const g = groupOf(a.deviceId);
      if (wave.maxConcurrentPer && (perGroup.get(g) ?? 0) >= wave.maxConcurrentPer.max) continue;
      this.set({ ...a, state: 'offered', offeredAt: this.now });
      this.out.commands.push({
        kind: 'offer',
        deviceId: a.deviceId,
        component: this.r.component,
        version: this.r.version,
      });
      inFlight++;
      perGroup.set(g, (perGroup.get(g) ?? 0) + 1);
      this.wake(this.now + wave.reportDeadlineMs);
    }
  }
}

/** Runs one engine step. Pure: the same input always gives the same output. */
export function step(input: StepInput): StepOutput {
  return new Stepper(input).run();
}
