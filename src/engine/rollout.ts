// The rollout engine: a pure, deterministic step (state, fleet, events, now) → (state, assignments, commands).
// The server, the rehearsal simulator and the tests all run exactly this code.
import { type Plan, resolveAmount, type WaveSpec, type WindowSpec } from './plan.ts';
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

/** Reason recorded for a device that did not report before its deadline (a transient failure: retryable). */
export const NO_REPORT = 'no report before the deadline';

export type AssignmentState =
  | 'queued'
  | 'offered'
  | 'succeeded'
  | 'failed'
  | 'skipped'
  | 'reverting'
  | 'unconfirmed' // told to revert, but did not confirm before the deadline (it still gets the revert on return)
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
  deferredUntil?: number | null; // operator or device deferral: nothing is offered before this instant
}

export type EngineEvent =
  | { kind: 'pause'; actor: string }
  | { kind: 'resume'; actor: string }
  | { kind: 'abort'; actor: string; reason?: string }
  | { kind: 'approve'; actor: string }
  | { kind: 'rollback'; actor: string; reason?: string }
  | { kind: 'retry'; actor: string };

/** Failure reasons worth another try: the release never got a fair chance on the device. */
export function isTransientFailure(reason: string | null): boolean {
  if (reason === null) return false;
  return /^(download|timeout)\b|no report|deadline|timed out|network|ECONN|unreachable/i.test(reason);
}

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
  if (a.state === 'reverting' || a.state === 'unconfirmed') {
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

/**
 * The step's view of the assignments: the caller's map, untouched, plus this step's changes. Copying a
 * million-entry map on every step cost more than the whole step's logic.
 */
class AssignmentOverlay {
  private readonly over = new Map<string, Assignment>();
  constructor(private readonly base: ReadonlyMap<string, Assignment>) {}
  get(id: string): Assignment | undefined {
    return this.over.get(id) ?? this.base.get(id);
  }
  has(id: string): boolean {
    return this.over.has(id) || this.base.has(id);
  }
  set(id: string, a: Assignment): void {
    this.over.set(id, a);
  }
  *values(): IterableIterator<Assignment> {
    const over = this.over;
    if (over.size === 0) {
      yield* this.base.values();
      return;
    }
    for (const [id, a] of this.base) yield over.get(id) ?? a;
    for (const [id, a] of over) if (!this.base.has(id)) yield a;
  }
}

/**
 * Device lookup by id. The id → position index is memoised per fleet array, so a caller that reuses its
 * array (the simulator) does not pay for a million-entry map on every step; entries are read live from
 * the array and checked, so replacing or reordering elements is detected and the index rebuilt.
 */
const deviceIndexes = new WeakMap<readonly DeviceView[], Map<string, number>>();
class DeviceLookup {
  private index: Map<string, number>;
  private rebuilt = false;
  constructor(private readonly devices: readonly DeviceView[]) {
    const cached = deviceIndexes.get(devices);
    this.index = cached && cached.size === devices.length ? cached : this.build();
  }
  private build(): Map<string, number> {
    const m = new Map<string, number>();
    for (let i = 0; i < this.devices.length; i++) m.set(this.devices[i].id, i);
    deviceIndexes.set(this.devices, m);
    this.rebuilt = true;
    return m;
  }
  get(id: string): DeviceView | undefined {
    const i = this.index.get(id);
    const d = i === undefined ? undefined : this.devices[i];
    if (d?.id === id) return d;
    if (this.rebuilt) return undefined;
    this.index = this.build();
    return this.get(id);
  }
  has(id: string): boolean {
    return this.get(id) !== undefined;
  }
}

class Stepper {
  readonly out: StepOutput;
  private readonly asg: AssignmentOverlay;
  private readonly devById: DeviceLookup;
  private readonly windowCache = new Map<WindowSpec, ReturnType<typeof windowOpen>>();

  constructor(private readonly input: StepInput) {
    this.asg = new AssignmentOverlay(input.assignments);
    this.devById = new DeviceLookup(input.devices);
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
    // One row per device: an assignment queued and offered in the same step is persisted once, as offered.
    if (this.out.changed.length > 1) {
      const latest = new Map<string, Assignment>();
      for (const a of this.out.changed) latest.set(a.deviceId, a);
      if (latest.size !== this.out.changed.length) this.out.changed = [...latest.values()];
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
      case 'retry':
        // Re-offers the release to devices whose failure was transient, in the current wave; on a
        // halted rollout this is an explicit operator override, like resume.
        if ((s === 'running' || s === 'baking' || s === 'halted') && this.retryCanPass()) {
          let n = 0;
          for (const a of [...this.asg.values()])
            if (a.state === 'failed' && isTransientFailure(a.reason)) {
              const d = this.devById.get(a.deviceId);
              if (!d) continue;
              this.set({
                ...a,
                wave: this.r.wave,
                state: 'queued',
                offeredAt: null,
                reportedAt: null,
                reason: null,
              });
              n++;
            }
          if (n > 0) {
            this.r.reason = null;
            this.r.haltedAtWave = null;
            this.r.bakeUntil = null;
            this.go('running', `${n} devices with transient failures retried by ${ev.actor}`);
          }
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

  /** A retry is pointless when the real (non-transient) failures alone exceed a wave's budget. */
  private retryCanPass(): boolean {
    const waves = this.input.plan.waves;
    const failed = new Array<number>(this.r.wave + 1).fill(0);
    const selected = new Array<number>(this.r.wave + 1).fill(0);
    for (const a of this.asg.values()) {
      if (a.wave < 0 || a.wave > this.r.wave || a.state === 'skipped') continue;
      const retried = a.state === 'failed' && isTransientFailure(a.reason) && this.devById.has(a.deviceId);
      const w = retried ? this.r.wave : a.wave;
      selected[w]++;
      if (a.state === 'failed' && !retried) failed[w]++;
    }
    for (let w = 0; w <= this.r.wave; w++)
      if (failureBudgetExceeded(waves[w], failed[w], selected[w])) return false;
    return true;
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
        // offeredAt now marks when the revert was offered: the revert deadline runs from here.
        this.set({ ...a, state: 'reverting', reason: why, offeredAt: this.now });
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
        if (this.successGateFailed()) return; // health reported during bake counts against the wave
        this.nextWave();
        return;
      }
      case 'rolling-back': {
        // A device that never confirms its revert must not hold the rollout in rolling-back forever.
        let left = 0;
        let unconfirmed = 0;
        for (const a of [...this.asg.values()]) {
          if (a.state === 'unconfirmed') unconfirmed++;
          if (a.state !== 'reverting') continue;
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
    // Rank once per device, not once per comparison: the sort is the step's hot spot on large fleets.
    const ranks = new Map<DeviceView, number>();
    if (order.length > 0)
      for (const d of candidates) {
        const i = order.findIndex((o) => matches(o, d.labels));
        ranks.set(d, i < 0 ? order.length : i);
      }
    const rank = (d: DeviceView) => ranks.get(d) ?? 0;
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

  /**
   * Halts when a started wave's failures exceed its budget; true when it did. Earlier waves count too: a
   * device of a passed wave that turns unhealthy later is still a bad sign about the release.
   */
  private checkFailures(): boolean {
    const waves = this.input.plan.waves;
    const failed = new Array<number>(this.r.wave + 1).fill(0);
    const selected = new Array<number>(this.r.wave + 1).fill(0);
    for (const a of this.asg.values()) {
      if (a.wave > this.r.wave || a.wave < 0 || a.state === 'skipped') continue;
      selected[a.wave]++;
      if (a.state === 'failed') failed[a.wave]++;
    }
    for (let w = 0; w <= this.r.wave; w++) {
      if (failureBudgetExceeded(waves[w], failed[w], selected[w])) {
        this.halt(
          `wave ${waves[w].name}: ${failed[w]} of ${selected[w]} devices failed, over the failure budget`,
        );
        return true;
      }
    }
    return false;
  }

  /** Halts when the current wave's success ratio is below its gate; true when it did. */
  private successGateFailed(): boolean {
    const wave = this.input.plan.waves[this.r.wave];
    let selected = 0;
    let succeeded = 0;
    let reported = 0;
    for (const a of this.asg.values()) {
      if (a.wave !== this.r.wave || a.state === 'skipped') continue;
      selected++;
      if (a.state === 'succeeded') succeeded++;
      if (a.state === 'succeeded' || (a.state === 'failed' && a.reason !== NO_REPORT)) reported++;
    }
    const need = resolveAmount(wave.minReported ?? { count: 0 }, selected);
    if (reported < need) {
      // Too little evidence to judge: stop exposure, but do not roll back what may be healthy.
      const why = `wave ${wave.name}: inconclusive, ${reported} of ${selected} devices reported (min_reported ${need})`;
      this.r.reason = why;
      this.r.haltedAtWave = this.r.wave;
      this.dropQueued('rollout halted');
      this.go('halted', why);
      return true;
    }
    if (selected > 0 && (succeeded * 100) / selected < wave.minSuccessPercent) {
      this.halt(
        `wave ${wave.name}: ${succeeded} of ${selected} succeeded, below the ${wave.minSuccessPercent}% gate`,
      );
      return true;
    }
    return false;
  }

  private runWave(): void {
    const wave = this.input.plan.waves[this.r.wave];
    // Deadline: an offered device that has not reported in time counts as failed.
    for (const a of this.waveAssignments(this.r.wave)) {
      if (a.state !== 'offered' || a.offeredAt === null) continue;
      // A device waiting for its maintenance window is not late: the deadline never expires while the
      // window is closed. A device that did not report in the window it was offered in gets one more
      // window, with the deadline shortened to fit inside it, so it fails at the latest when that ends.
      let from = a.offeredAt;
      let limit = wave.reportDeadlineMs;
      const spec = this.windowFor(wave, this.devById.get(a.deviceId));
      if (spec) {
        const w = this.window(spec);
        if (!w.open) {
          this.wake(w.nextChange);
          continue;
        }
        if (w.openedAt !== null && w.openedAt > from) {
          from = w.openedAt;
          limit = Math.min(limit, Math.max(w.nextChange - w.openedAt - 60_000, 1));
        }
      }
      const due = from + limit;
      if (this.now >= due) this.set({ ...a, state: 'failed', reportedAt: this.now, reason: NO_REPORT });
      else this.wake(due);
    }
    if (this.checkFailures()) return;
    this.offerQueued(wave);
    const list = this.waveAssignments(this.r.wave);
    const open = list.some((a) => a.state === 'queued' || a.state === 'offered');
    if (open) return;
    if (this.successGateFailed()) return;
    const selected = list.filter((a) => a.state !== 'skipped').length;
    const succeeded = list.filter((a) => a.state === 'succeeded').length;
    const factor = this.r.emergency ? this.input.plan.emergencyBakeFactor : 1;
    this.r.bakeUntil = this.now + Math.round(wave.bakeMs * factor);
    this.go('baking', `wave ${wave.name} passed its gate (${succeeded}/${selected}); baking`);
    this.wake(this.r.bakeUntil);
  }

  /** The window that governs a device in a wave: its label's window, else the wave's, else the plan's. */
  private windowFor(wave: WaveSpec, d: DeviceView | undefined): WindowSpec | null {
    const dw = this.input.plan.deviceWindows;
    if (dw && d) {
      const name = d.labels[dw.label];
      if (name !== undefined && Object.hasOwn(dw.windows, name)) return dw.windows[name];
    }
    return wave.window;
  }

  /** Window state, computed once per window per step. */
  private window(spec: WindowSpec): ReturnType<typeof windowOpen> {
    let w = this.windowCache.get(spec);
    if (!w) {
      w = windowOpen(spec, this.now);
      this.windowCache.set(spec, w);
    }
    return w;
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
      if (d.deferredUntil != null && this.now < d.deferredUntil) {
        this.wake(d.deferredUntil); // deferral wins too, and is no failure
        continue;
      }
      const spec = this.windowFor(wave, d);
      if (spec) {
        const w = this.window(spec);
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
