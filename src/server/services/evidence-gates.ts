// Evidence gates' imperative shell (docs/evidence-gates.md): for every baking rollout whose wave has a `compare:`
// gate, takes each look when due — reads the devices, the rollout's assignments and the latest signal samples,
// builds treatment and control (engine/evidence.ts), judges them, attributes a failing signal across the other
// active rollouts (engine/attribution.ts) — and steps the rollout with the look as an engine event. The engine
// decides what a look means; this file gathers data, records the numbers in the audit log and halts blamed
// rollouts.
import type { Logger } from 'pino';
import { type AttributionResult, attribute, type RolloutExposure } from '../../engine/attribution.ts';
import {
  type Cohorts,
  cohortMembers,
  combine,
  describeSignal,
  type EvidenceEvent,
  type EvidenceVerdict,
  judgeEvidence,
  nextLook,
  type SignalVerdict,
  signalNumbers,
  testAlpha,
} from '../../engine/evidence.ts';
import type { CompareSpec, WaveSpec } from '../../engine/plan.ts';
import { ACTIVE, type RolloutStatus, TERMINAL } from '../../engine/rollout-state.ts';
import { loadAssignments } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import { inTransaction, type Store } from '../db/database.ts';
import { componentStatesOf } from '../db/device-components.ts';
import { signalSamples } from '../db/device-signals.ts';
import { findRollout, type Rollout, rolloutIdsIn } from '../db/rollouts.ts';
import { PeriodicPass } from '../periodic-pass.ts';
import type { RolloutDriver } from '../rollout-driver.ts';
import { deviceViews } from './rollout-fleet.ts';

const BAKING: ReadonlySet<RolloutStatus> = new Set(['baking']);
/** Rollouts that can take the blame: those still offering or holding their release on devices. */
const BLAMABLE: ReadonlySet<RolloutStatus> = new Set(['running', 'baking', 'awaiting-approval', 'paused']);

/** A look's outcome, with the rollouts another rollout's release explains its failing signals by. */
export interface Look {
  verdict: EvidenceVerdict;
  blamed: Array<{ rolloutId: number; why: string; signal: string; attribution: AttributionResult }>;
}

/** The rollout's effective bake of the current wave (emergency rollouts bake shorter). */
function bakeOf(ro: Rollout, wave: WaveSpec): number {
  return Math.round(wave.bakeMs * (ro.state.emergency ? ro.plan.emergencyBakeFactor : 1));
}

/** The look due now for a baking rollout with an evidence gate, or null. */
export function dueLook(ro: Rollout, now: number): { look: number; at: number } | null {
  const st = ro.state;
  const wave = ro.plan.waves[st.wave];
  if (st.status !== 'baking' || !wave?.compare || st.bakeUntil === null) return null;
  const bakeMs = bakeOf(ro, wave);
  const startedAt = st.bakeStartedAt ?? st.bakeUntil - bakeMs;
  const last = st.evidence?.find((k) => k.wave === st.wave && k.at >= startedAt);
  const next = nextLook(wave.compare, startedAt, bakeMs, st.bakeUntil, last?.look ?? null);
  return next && now >= next.at ? next : null;
}

/** Takes a look at a rollout's current wave: cohorts, verdict and attribution (reads only). */
export async function takeLook(store: Store, ro: Rollout): Promise<Look> {
  const db = store.db;
  const st = ro.state;
  const wave = ro.plan.waves[st.wave];
  const spec = wave.compare as CompareSpec;
  const since = st.waveStartedAt ?? 0;
  const [devices, assignments, samples] = await Promise.all([
    deviceViews(db, { component: ro.component, rolloutId: ro.id, channel: ro.channel }),
    loadAssignments(db, ro.id),
    signalSamples(db, ro.component, since),
  ]);
  const sampleOf = new Map(samples.map((s) => [s.deviceId, s]));
  const members = cohortMembers({
    select: wave.select,
    target: ro.version,
    devices: devices.filter((d) => d.hasComponent !== false),
    exposedAt: (id) => {
      const a = assignments.get(id);
      return a && a.state !== 'queued' && a.state !== 'skipped' ? (a.offeredAt ?? a.reportedAt ?? 0) : null;
    },
    samples: sampleOf,
    since,
  });
  const cohorts = new Map<string, Cohorts>();
  const valuesOf = new Map<string, Map<string, number>>();
  for (const g of spec.signals) {
    const c: Cohorts = { treatment: [], control: [] };
    const values = new Map<string, number>();
    for (const [id, side] of members) {
      const v = sampleOf.get(id)?.values[g.name];
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      c[side].push(v);
      values.set(id, v);
    }
    cohorts.set(g.name, c);
    valuesOf.set(g.name, values);
  }
  const verdict = judgeEvidence(spec, cohorts);
  const blamed: Look['blamed'] = [];
  // A shift (failing or marginal) may be another rollout's doing: attribute before acting on it.
  const shifted = (s: SignalVerdict) => s.verdict === 'fail' || s.verdict === 'marginal';
  if (verdict.signals.some(shifted)) {
    const treatment = new Set([...members].filter(([, side]) => side === 'treatment').map(([id]) => id));
    const others = await otherExposures(store, ro, [...members.keys()]);
    if (others.length > 0) {
      verdict.signals = verdict.signals.map((s) => {
        if (!shifted(s)) return s;
        const g = spec.signals.find((x) => x.name === s.signal);
        if (!g) return s;
        const own: RolloutExposure = {
          rolloutId: String(ro.id),
          label: `rollout ${ro.id} (${ro.component} ${ro.version})`,
          exposed: treatment,
        };
        const result = attribute({
          values: valuesOf.get(s.signal) ?? new Map(),
          badDirection: g.bad,
          confidence: 1 - testAlpha(spec),
          tolerance: g.tolerance,
          minSamples: spec.minSamples,
          exposures: [own, ...others],
        });
        for (const b of result.blamed)
          if (b.rolloutId !== own.rolloutId)
            blamed.push({
              rolloutId: Number(b.rolloutId),
              signal: s.signal,
              attribution: result,
              why: `attributed by rollout ${ro.id}'s evidence gate: ${blameLine(s.signal, b.label, b.comparison)}`,
            });
        const culprits = result.blamed.filter((b) => b.rolloutId !== own.rolloutId);
        // Blamed itself (too), or nobody else explains it: its own verdict stands.
        if (culprits.length === 0 || culprits.length < result.blamed.length) return s;
        // Judged again without the culprits' devices: a pass clears it; too few devices left to tell is
        // inconclusive, never a pass (its treatment may all have taken the culprit's release too).
        const labels = culprits.map((b) => b.label).join(', ');
        const mine = result.cleared.find((c) => c.rolloutId === own.rolloutId)?.comparison;
        if (!mine) return s;
        return {
          ...s,
          ...mine,
          verdict: mine.verdict === 'fail' ? s.verdict : mine.verdict,
          attributedTo: labels,
          reason: `explained by ${labels}; without its devices: ${mine.reason}`,
        } satisfies SignalVerdict;
      });
      verdict.verdict = combine(verdict.signals);
    }
  }
  return { verdict, blamed };
}

function blameLine(
  signal: string,
  label: string,
  c: { p: number | null; effect: number | null; n_treatment: number; n_control: number },
): string {
  return `${signal} is worse on devices running ${label} (p=${c.p?.toPrecision(3)}, effect ${c.effect?.toPrecision(3)}, ${c.n_treatment} with it, ${c.n_control} without)`;
}

/** Every other active rollout with devices in the population: the devices running its release. */
async function otherExposures(store: Store, ro: Rollout, population: string[]): Promise<RolloutExposure[]> {
  const out: RolloutExposure[] = [];
  for (const id of await rolloutIdsIn(store.db, ACTIVE)) {
    if (id === ro.id) continue;
    const other = await findRollout(store.db, id);
    if (!other || TERMINAL.has(other.state.status)) continue;
    const states = await componentStatesOf(store.db, other.component, population);
    const exposed = new Set(states.filter((s) => s.version === other.version).map((s) => s.deviceId));
    if (exposed.size === 0) continue;
    out.push({
      rolloutId: String(id),
      label: `rollout ${id} (${other.component} ${other.version})`,
      exposed,
    });
  }
  return out;
}

/** Takes due looks of every baking rollout with an evidence gate, about once a second. */
export class EvidenceGateEvaluator {
  private readonly periodic: PeriodicPass;

  constructor(
    private readonly store: Store,
    private readonly driver: RolloutDriver,
    private readonly log: Logger,
    private readonly clock: () => number,
  ) {
    this.periodic = new PeriodicPass(() => this.pass(), log, 'evidence gate');
  }

  start(everyMs = 1000): void {
    this.periodic.start(everyMs);
  }

  stop(): Promise<void> {
    return this.periodic.stop();
  }

  /** One pass: each baking rollout's due look, stepped in as an event, audited with its numbers. */
  async pass(): Promise<void> {
    for (const id of await rolloutIdsIn(this.store.db, BAKING)) {
      if (this.periodic.stopped) return;
      // One rollout's trouble must not starve the others of their looks (they would halt as stale).
      await this.passOne(id).catch((err) =>
        this.log.error({ err, rollout: id }, 'evidence gate look failed'),
      );
    }
  }

  /** Takes the rollout's look if one is due: steps it in, audits the numbers, halts the rollouts it blames. */
  private async passOne(id: number): Promise<void> {
    const ro = await findRollout(this.store.db, id);
    const now = this.clock();
    const due = ro && dueLook(ro, now);
    if (!ro || !due) return;
    const wave = ro.plan.waves[ro.state.wave];
    const look = await takeLook(this.store, ro);
    const ev: EvidenceEvent = {
      kind: 'evidence',
      wave: ro.state.wave,
      look: due.look,
      at: now,
      ...look.verdict,
    };
    const after = await this.driver.stepRollout(id, [ev], 'engine');
    await this.audit(`rollout/${id}`, 'rollout.evidence-gate', {
      wave: wave.name,
      look: due.look,
      verdict: look.verdict.verdict,
      signals: look.verdict.signals.map((s) => ({
        ...signalNumbers(s),
        verdict: s.verdict,
        summary: describeSignal(s),
      })),
      status: after.status,
    });
    if (look.verdict.verdict !== 'pass')
      this.log.warn({ rollout: id, wave: wave.name, verdict: look.verdict.verdict }, 'evidence gate');
    for (const b of look.blamed) {
      const other = await findRollout(this.store.db, b.rolloutId);
      if (!other || !BLAMABLE.has(other.state.status)) continue;
      const blamedAfter = await this.driver.stepRollout(
        b.rolloutId,
        [{ kind: 'blamed', by: String(id), why: b.why }],
        'engine',
      );
      await this.audit(`rollout/${b.rolloutId}`, 'rollout.attributed', {
        by: `rollout/${id}`,
        signal: b.signal,
        why: b.why,
        blamed: b.attribution.blamed.map((a) => ({ rollout: a.rolloutId, ...a.comparison })),
        cleared: b.attribution.cleared.map((a) => ({ rollout: a.rolloutId, ...a.comparison })),
        status: blamedAfter.status,
      });
    }
  }

  private audit(subject: string, action: string, detail: Record<string, unknown>): Promise<void> {
    return inTransaction(this.store, (tx) =>
      appendAudit(tx, { at: this.clock(), actor: 'engine', action, subject, detail }),
    );
  }
}
