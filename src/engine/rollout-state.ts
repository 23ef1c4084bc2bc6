// The rollout's plain data: its status, the per-device assignments, the fleet view the engine reads, the
// operator events it takes and the commands it emits; plus the pure updates made outside a step.
import { type FailureClass, isRetryable, legacyClass, NO_REPORT_REASON } from '../protocol/failure-class.ts';
import type { EvidenceEvent, EvidenceRecord } from './evidence.ts';
import type { Labels } from './selector.ts';

export type { FailureClass };

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
  /** The last result of each metric gate, per wave (absent on rollouts stored before metric gates). */
  metricGates?: MetricGateResult[];
  /** When the current wave began to bake (absent on rollouts stored before evidence gates). */
  bakeStartedAt?: number | null;
  /** The latest evidence-gate look of each wave (absent: none taken). */
  evidence?: EvidenceRecord[];
  /** Waves whose bake a marginal verdict extended (once each). */
  extended?: number[];
  /** When a step first found the current bake over with its evidence gate's final look still missing. */
  finalLookAwaitedSince?: number | null;
}

/** A metric gate's last evaluation: its value (null: could not be evaluated, see `error`) and the verdict. */
export interface MetricGateResult {
  wave: number;
  name: string;
  value: number | null;
  error: string | null;
  at: number;
  state: 'ok' | 'breached' | 'inconclusive';
}

/** Reason recorded for a device that did not report before its deadline (class `no-report`: retryable). */
export const NO_REPORT = NO_REPORT_REASON;

// Kept in a file of their own so light callers (the CLI's flags) need not load the failure classes' schemas.
import type { AssignmentState } from './assignment-states.ts';

export { ASSIGNMENT_STATES, type AssignmentState } from './assignment-states.ts';

/** What the device itself said about the release: it kept it, it failed it, or it undid it by itself. */
export type DeviceOutcome = 'succeeded' | 'failed' | 'rolled-back';

export interface Assignment {
  deviceId: string;
  wave: number;
  state: AssignmentState;
  /** The device's own verdict on the target (null before it reported); kept when the rollout reverts it. */
  outcome?: DeviceOutcome | null;
  fromVersion: string | null;
  offeredAt: number | null;
  reportedAt: number | null;
  reason: string | null;
  /** Why it failed, as a class (the engine retries by class only); absent on rows stored without one. */
  failureClass?: FailureClass | null;
}

export interface DeviceView {
  id: string;
  labels: Labels;
  held: boolean; // operator or device hold: never offered anything
  pinned: boolean; // pinned to a version of this component
  busy: boolean; // owned by another active rollout of this component
  version: string | null; // version of this component the device runs now
  deferredUntil?: number | null; // operator or device deferral: nothing is offered before this instant
  /**
   * The device last reported this component with no transaction open (idle, held or pinned). Undefined where
   * the view does not track it (the simulator): then only reports confirm a revert.
   */
  settled?: boolean;
  /** When the server last heard from the device (its last check-in); with `settled` and `version`. */
  seenAt?: number;
  /** The device reports this component (false: it does not run it, so it is never offered). Undefined = yes. */
  hasComponent?: boolean;
}

export type EngineEvent =
  | { kind: 'pause'; actor: string }
  | { kind: 'resume'; actor: string }
  | { kind: 'abort'; actor: string; reason?: string }
  | { kind: 'approve'; actor: string }
  | { kind: 'rollback'; actor: string; reason?: string }
  | { kind: 'retry'; actor: string }
  | MetricEvent
  | EvidenceEvent
  | BlamedEvent;

/** Another rollout's evidence gate attributed a bad signal to this rollout's release: halt it (see attribution.ts). */
export interface BlamedEvent {
  kind: 'blamed';
  /** The rollout whose gate found it. */
  by: string;
  why: string;
}

/** A metric gate's evaluation for a wave: the query's value, or null when it could not be evaluated (`error`). */
export interface MetricEvent {
  kind: 'metric';
  wave: number;
  name: string;
  value: number | null;
  error?: string;
  at: number;
}

/** The class of a failed assignment: the one recorded with it, else the one its `class: reason` text names. */
export function failureClassOf(a: Pick<Assignment, 'failureClass' | 'reason'>): FailureClass {
  return a.failureClass ?? legacyClass(a.reason);
}

/** A failure worth another try (the release never got a fair chance on the device), decided by its class. */
export function isRetryableFailure(a: Pick<Assignment, 'failureClass' | 'reason'>): boolean {
  return isRetryable(failureClassOf(a));
}

export type Command =
  | { kind: 'offer'; deviceId: string; component: string; version: string }
  | { kind: 'revert'; deviceId: string; component: string; version: string | null }
  | { kind: 'withdraw'; deviceId: string; component: string };

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
  r: {
    outcome: DeviceOutcome;
    version: string;
    target: string;
    reason?: string | null;
    /** The failure's class; without one, the class the `class: reason` text names (see legacyClass). */
    failureClass?: FailureClass | null;
    at: number;
  },
): Assignment | null {
  const failed = r.outcome !== 'succeeded';
  if (a.state === 'reverting' || a.state === 'unconfirmed') {
    // A revert is done when the device reports anything but the rolled-back release as healthy, or reports
    // the rolled-back release as failed (it undid it by itself).
    if (!failed && r.version !== r.target) return { ...a, state: 'reverted', reportedAt: r.at };
    if (failed && r.version === r.target)
      return { ...a, state: 'reverted', reportedAt: r.at, outcome: r.outcome };
    return null;
  }
  if (r.version !== r.target) return null;
  if (a.state === 'offered' || (a.state === 'succeeded' && failed)) {
    // A failure after success (health during bake) still counts against the wave.
    return {
      ...a,
      state: failed ? 'failed' : 'succeeded',
      outcome: r.outcome,
      reportedAt: r.at,
      reason: r.reason ?? null,
      failureClass: failed ? (r.failureClass ?? legacyClass(r.reason)) : null,
    };
  }
  return null;
}

/**
 * True when a check-in received after the revert was ordered shows the device back on the version the rollout
 * reverts it to (or on none, after a first install) with no transaction open. Only a later check-in counts: the
 * check-in that delivered the release still showed the old version while the device was about to install it.
 */
export function observedReverted(a: Assignment, d: DeviceView | undefined): boolean {
  return (
    d !== undefined &&
    d.settled === true &&
    d.seenAt !== undefined &&
    a.offeredAt !== null &&
    d.seenAt > a.offeredAt &&
    d.version === a.fromVersion
  );
}

/**
 * Why an operator event cannot apply to a rollout in its current status, or null when it can. The step
 * ignores events that do not apply; callers use this to refuse them with a message instead.
 */
export function eventRefusal(status: RolloutStatus, ev: EngineEvent['kind']): string | null {
  const ok: Record<EngineEvent['kind'], (s: RolloutStatus) => boolean> = {
    pause: (s) => s === 'running' || s === 'baking' || s === 'awaiting-approval' || s === 'pending',
    resume: (s) => s === 'paused' || s === 'halted',
    approve: (s) => s === 'awaiting-approval',
    abort: (s) => !TERMINAL.has(s),
    retry: (s) => s === 'running' || s === 'baking' || s === 'halted',
    rollback: (s) => s !== 'rolled-back' && s !== 'rolling-back',
    metric: (s) => s === 'running' || s === 'baking',
    evidence: (s) => s === 'baking',
    blamed: (s) => s === 'running' || s === 'baking' || s === 'awaiting-approval' || s === 'paused',
  };
  return ok[ev](status) ? null : `cannot ${ev} a rollout that is ${status}`;
}
