// Evidence-gate looks in the rehearsal, taken exactly as the server's evaluator takes them: while the rollout
// bakes a wave with `compare`, each look due (nextLook) assembles the treatment and the control from the
// devices' latest samples (assembleCohorts), judges them (judgeEvidence) and hands the engine an EvidenceEvent.
// The devices' samples are drawn here, lazily, for the check-ins the simulation never needed to queue.
import {
  assembleCohorts,
  type CohortDevice,
  type EvidenceEvent,
  judgeEvidence,
  nextLook,
} from '../engine/evidence.ts';
import type { Plan } from '../engine/plan.ts';
import type { Assignment, RolloutState } from '../engine/rollout.ts';
import { matches, parseSelector } from '../engine/selector.ts';
import type { SimFleet } from './fleet.ts';
import type { Rng } from './prng.ts';
import type { EvidenceLookView } from './rehearsal-result.ts';
import type { SignalSample, SimSignals } from './signals.ts';
import type { SimDevices } from './sim-devices.ts';

export interface EvidenceSetup {
  plan: Plan;
  fleet: SimFleet;
  version: string;
  fromVersion: string | null;
  start: number;
  devices: Pick<SimDevices, 'lastCheckin' | 'ranReleaseBefore' | 'runsRelease'>;
  signals: SimSignals;
  /** Whether a flaky device's check-in got through is drawn from this stream (the devices' is their own). */
  rng: Rng;
  /** Devices that have installed the release so far (for the report). */
  installed: () => number;
}

/** The look due for the current wave's bake, with what it needs. */
interface Due {
  wave: number;
  look: number;
  at: number;
  key: string;
}

/** Takes the looks of a rehearsal's evidence gates and keeps them for the report. */
export class EvidenceLooks {
  readonly looks: EvidenceLookView[] = [];
  /** The last look sent per bake ("wave@bakeStartedAt"), so an ignored event is never sent again and again. */
  private readonly sent = new Map<string, number>();
  /** A look was handed to the engine in the step running now. */
  private unsettled = false;

  constructor(private readonly s: EvidenceSetup) {}

  /** The next look of the current wave's bake (taken or not), or null: none is left, or no gate bakes. */
  private due(r: RolloutState): Due | null {
    if (r.status !== 'baking' || r.bakeUntil === null) return null;
    const wave = this.s.plan.waves[r.wave];
    const spec = wave?.compare;
    if (!spec) return null;
    const bakeMs = Math.round(wave.bakeMs * (r.emergency ? this.s.plan.emergencyBakeFactor : 1));
    // An engine state from before evidence gates has no bakeStartedAt: the bake's start follows from its end.
    const bakeStartedAt = r.bakeStartedAt ?? r.bakeUntil - bakeMs;
    const key = `${r.wave}@${bakeStartedAt}`;
    const kept = r.evidence?.find((e) => e.wave === r.wave && e.at >= bakeStartedAt)?.look ?? 0;
    const last = Math.max(kept, this.sent.get(key) ?? 0);
    const next = nextLook(spec, bakeStartedAt, bakeMs, r.bakeUntil, last || null);
    return next && { wave: r.wave, look: next.look, at: next.at, key };
  }

  /** When the next look is due, or Infinity. */
  nextDue(r: RolloutState): number {
    return this.due(r)?.at ?? Number.POSITIVE_INFINITY;
  }

  /** The look due at t, taken, as the engine event; none when no look is due. */
  events(r: RolloutState, assignments: ReadonlyMap<string, Assignment>, t: number): EvidenceEvent[] {
    const due = this.due(r);
    if (!due || t < due.at) return [];
    this.sent.set(due.key, due.look);
    this.unsettled = true;
    const spec = this.s.plan.waves[due.wave].compare;
    if (!spec) return [];
    const samples = new Map<string, SignalSample>();
    const cohorts = assembleCohorts({
      select: this.s.plan.waves[due.wave].select,
      target: this.s.version,
      devices: this.sampled(this.s.plan.waves[due.wave].select, t, samples),
      exposedAt: (id) => assignments.get(id)?.offeredAt ?? null,
      samples,
      since: r.waveStartedAt ?? 0,
      signals: spec.signals.map((g) => g.name),
    });
    const verdict = judgeEvidence(spec, cohorts);
    this.looks.push({
      at_ms: t - this.s.start,
      wave: this.s.plan.waves[due.wave].name,
      look: due.look,
      verdict: verdict.verdict,
      installed: this.s.installed(),
      status_after: r.status,
      signals: verdict.signals.map((v) => ({
        signal: v.signal,
        verdict: v.verdict,
        critical: v.critical,
        p: v.p,
        effect: v.effect,
        n_treatment: v.n_treatment,
        n_control: v.n_control,
      })),
    });
    return [{ kind: 'evidence', wave: due.wave, look: due.look, at: t, ...verdict }];
  }

  /** After each step: notes what the engine did with a look it was just given (the rollout's new status). */
  settled(status: RolloutState['status']): void {
    if (!this.unsettled) return;
    this.unsettled = false;
    const last = this.looks[this.looks.length - 1];
    if (last) last.status_after = status;
  }

  /**
   * The devices of the wave's selector as cohort assembly sees them, each with its latest sample at t (drawn
   * for its latest check-in, in device order so a seed gives the same samples), filled into `samples`.
   */
  private sampled(select: string, t: number, samples: Map<string, SignalSample>): CohortDevice[] {
    const { fleet, devices, signals, rng, version, fromVersion } = this.s;
    const sel = parseSelector(select);
    const out: CohortDevice[] = [];
    for (let i = 0; i < fleet.ids.length; i++) {
      if (!matches(sel, fleet.labels[i])) continue;
      const c = devices.lastCheckin(i, t, rng);
      if (c !== null) signals.checkedIn(i, c, devices.ranReleaseBefore(i, c));
      const sample = signals.latest(i);
      if (sample) samples.set(fleet.ids[i], sample);
      out.push({
        id: fleet.ids[i],
        labels: fleet.labels[i],
        version: devices.runsRelease(i) ? version : fromVersion,
      });
    }
    return out;
  }
}
