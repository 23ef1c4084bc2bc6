// The rehearsal's control plane: the real engine step() over the simulated fleet, as the server runs it. It
// steps when there is news (a report) or when the engine asked to wake, approves gated waves after the
// operator's delay, applies device reports to their assignments, takes evidence-gate looks when they are due
// (evidence-looks.ts), and hands the engine's commands back.
import { AssignmentIndex } from '../engine/assignment-index.ts';
import type { MetricGateSpec, Plan } from '../engine/plan.ts';
import {
  type Assignment,
  applyReport,
  type Command,
  type DeviceView,
  type EngineEvent,
  newRollout,
  type RolloutState,
  step,
  type Transition,
} from '../engine/rollout.ts';
import type { EvidenceLooks } from './evidence-looks.ts';
import type { MetricFault } from './faults.ts';
import type { TransitionView } from './rehearsal-result.ts';
import type { SentReport } from './sim-devices.ts';
import type { Tally } from './tally.ts';

/** What the control plane is set up with. */
export interface ControlPlaneSetup {
  plan: Plan;
  /** The fleet as the engine sees it, and each device id's index in the simulation. */
  devices: readonly DeviceView[];
  index: ReadonlyMap<string, number>;
  component: string;
  version: string;
  fromVersion: string | null;
  emergency: boolean;
  start: number;
  tickMs: number;
  /** An operator approves a gated wave this long after it starts waiting; null: never. */
  approveAfterMs: number | null;
  tally: Tally;
  /** Metric faults (faults.ts), with the wave each waits for resolved to its index; in the order given. */
  metricFaults?: ReadonlyArray<MetricFault & { waveIndex: number | null }>;
  /** Takes the evidence-gate looks (only when the plan has evidence gates). */
  evidence?: EvidenceLooks;
}

/**
 * A simulated metric gate's reading: the value of the last metric fault for it that has begun, else a healthy
 * value just inside the threshold (a rehearsal has no real metrics; only a fault moves one).
 */
export function simulatedMetric(
  g: MetricGateSpec,
  faults: ControlPlaneSetup['metricFaults'],
  wave: number,
  sinceStartMs: number,
): number {
  let value: number | null = null;
  for (const f of faults ?? []) {
    if (f.name !== g.name) continue;
    const begun =
      (f.waveIndex !== null && wave >= f.waveIndex) || (f.afterMs !== null && sinceStartMs >= f.afterMs);
    if (begun) value = f.value;
  }
  if (value !== null) return value;
  const margin = Math.max(1e-6, Math.abs(g.threshold) * 0.01);
  if (g.comparison === '<') return g.threshold - margin;
  if (g.comparison === '>') return g.threshold + margin;
  return g.threshold;
}

/** The engine and its state in the rehearsal: the rollout, the assignments, and when it steps next. */
export class SimControlPlane {
  rollout: RolloutState;
  readonly assignments = new Map<string, Assignment>();
  /** Kept beside the assignments, so a step reads counts and open offers instead of visiting every device. */
  private readonly assignmentIndex = new AssignmentIndex();
  readonly transitions: TransitionView[] = [];
  /** Engine steps run so far. */
  steps = 0;
  /** When the rollout first halted or began rolling back. */
  haltedAt: number | null = null;
  /** Devices that had installed the release then. */
  installedAtHalt: number | null = null;
  /** When the engine steps next (the first step runs at the start). */
  stepDue: number;
  private approveAt: number | null = null;
  /** When each metric gate ("wave/name") was last read. */
  private readonly gateReadAt = new Map<string, number>();

  constructor(private readonly s: ControlPlaneSetup) {
    this.stepDue = s.start;
    this.rollout = newRollout({
      id: 'rehearsal',
      component: s.component,
      version: s.version,
      emergency: s.emergency,
      releaseCreatedAt: s.start,
      now: s.start,
    });
  }

  /** A report came in at t: the server steps at its next tick (sooner than planned, never later). */
  private newsAt(t: number): void {
    const { start, tickMs } = this.s;
    const at = Math.ceil((t - start) / tickMs) * tickMs + start;
    if (at < this.stepDue) this.stepDue = at;
  }

  /** A report from device i reaches the server at t and is applied to its assignment. */
  receive(i: number, report: SentReport, t: number): void {
    const { version, fromVersion, tally } = this.s;
    const a = this.assignments.get(this.s.devices[i].id);
    if (!a) return;
    if (report.kind === 'failed') tally.failedOn(i);
    const r =
      report.kind === 'reverted'
        ? { outcome: 'succeeded' as const, version: fromVersion ?? '', target: version, at: t }
        : {
            outcome: report.kind === 'committed' ? ('succeeded' as const) : ('failed' as const),
            version,
            target: version,
            reason: report.reason,
            failureClass: report.failureClass,
            at: t,
          };
    const next = applyReport(a, r);
    if (next) {
      this.setAssignment(next);
      this.newsAt(t);
    }
  }

  /** One engine step at t; returns the commands for the devices. */
  step(t: number): Command[] {
    const out = step({
      plan: this.s.plan,
      rollout: this.rollout,
      assignments: this.assignments,
      index: this.assignmentIndex,
      devices: this.s.devices,
      events: [
        ...this.operatorEvents(t),
        ...this.metricEvents(t),
        ...(this.s.evidence?.events(this.rollout, this.assignments, t) ?? []),
      ],
      now: t,
    });
    this.steps++;
    const prevStatus = this.rollout.status;
    this.rollout = out.rollout;
    this.s.evidence?.settled(this.rollout.status);
    for (const a of out.changed) this.applyChange(a, t);
    this.recordTransitions(out.transitions);
    this.planNextStep(t, out.wakeAt, prevStatus);
    return out.commands;
  }

  /** The operator's approval, once its delay has passed. */
  private operatorEvents(t: number): EngineEvent[] {
    if (this.approveAt === null || t < this.approveAt) return [];
    this.approveAt = null;
    return [{ kind: 'approve', actor: 'rehearsal' }];
  }

  /** The current wave's metric gates that are due at t, read as the server's evaluator would read them. */
  private metricEvents(t: number): EngineEvent[] {
    const r = this.rollout;
    if (r.status !== 'running' && r.status !== 'baking') return [];
    const out: EngineEvent[] = [];
    for (const g of this.s.plan.waves[r.wave]?.metrics ?? []) {
      const key = `${r.wave}/${g.name}`;
      const last = this.gateReadAt.get(key);
      if (last !== undefined && t - last < g.intervalMs) continue;
      this.gateReadAt.set(key, t);
      const value = simulatedMetric(g, this.s.metricFaults, r.wave, t - this.s.start);
      out.push({ kind: 'metric', wave: r.wave, name: g.name, value, at: t });
    }
    return out;
  }

  /** When the current wave's next metric gate is due (running or baking), or Infinity. */
  private nextGateRead(t: number): number {
    const r = this.rollout;
    if (r.status !== 'running' && r.status !== 'baking') return Number.POSITIVE_INFINITY;
    let next = Number.POSITIVE_INFINITY;
    for (const g of this.s.plan.waves[r.wave]?.metrics ?? []) {
      const last = this.gateReadAt.get(`${r.wave}/${g.name}`);
      next = Math.min(next, last === undefined ? t : last + g.intervalMs);
    }
    return next;
  }

  /** Takes one changed assignment from the step, counting a missed deadline the engine's last word hides. */
  private applyChange(a: Assignment, t: number): void {
    const prev = this.assignments.get(a.deviceId);
    if (prev && this.missedDeadline(prev, a, t)) this.s.tally.failedOn(this.indexOf(a.deviceId));
    this.setAssignment(a);
  }

  /**
   * A device that missed its deadline and is reverted in the same step never shows as `failed` in the
   * changes (the engine's last word wins): it is recognised here. Only where no maintenance window governs the
   * device, because a window stretches the deadline in ways the engine alone knows.
   */
  private missedDeadline(prev: Assignment, a: Assignment, t: number): boolean {
    const { plan } = this.s;
    return (
      prev.state === 'offered' &&
      prev.offeredAt !== null &&
      (a.state === 'reverting' || a.state === 'reverted' || a.state === 'unconfirmed') &&
      !(plan.deviceWindows || plan.waves[a.wave]?.window) &&
      t >= prev.offeredAt + plan.waves[a.wave].reportDeadlineMs
    );
  }

  private setAssignment(a: Assignment): void {
    const prev = this.assignments.get(a.deviceId);
    this.assignments.set(a.deviceId, a);
    this.assignmentIndex.note(prev, a);
    this.s.tally.assignmentChanged(this.indexOf(a.deviceId), a, prev);
  }

  private indexOf(deviceId: string): number {
    const i = this.s.index.get(deviceId);
    if (i === undefined) throw new Error(`rehearsal: the engine named an unknown device ${deviceId}`);
    return i;
  }

  /** Keeps the step's transitions, and the time each wave first started. */
  private recordTransitions(transitions: readonly Transition[]): void {
    const { plan, start, tally } = this.s;
    for (const tr of transitions)
      this.transitions.push({
        at_ms: tr.at - start,
        from: tr.from,
        to: tr.to,
        wave: plan.waves[tr.wave]?.name ?? null,
        why: tr.why,
      });
    for (const tr of transitions)
      if (tr.why.startsWith('wave ') && tr.why.includes(' started with '))
        tally.waveReached(tr.wave, tr.at - start);
  }

  /** Notes a halt and a wait for approval, then when to step next: the engine's wake-up or the approval. */
  private planNextStep(t: number, wakeAt: number | null, prevStatus: RolloutState['status']): void {
    const status = this.rollout.status;
    if ((status === 'halted' || status === 'rolling-back') && this.haltedAt === null) {
      this.haltedAt = t;
      this.installedAtHalt = this.s.tally.installed;
    }
    if (
      status === 'awaiting-approval' &&
      prevStatus !== 'awaiting-approval' &&
      this.s.approveAfterMs !== null
    )
      this.approveAt = t + this.s.approveAfterMs;
    this.stepDue = Number.POSITIVE_INFINITY;
    if (wakeAt !== null) this.stepDue = Math.max(wakeAt, t + 1);
    if (this.approveAt !== null) this.stepDue = Math.min(this.stepDue, Math.max(this.approveAt, t + 1));
    const gate = Math.min(this.nextGateRead(t), this.s.evidence?.nextDue(this.rollout) ?? Infinity);
    if (Number.isFinite(gate)) this.stepDue = Math.min(this.stepDue, Math.max(gate, t + 1));
  }
}
