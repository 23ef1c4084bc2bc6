// Evidence gates (issue 16): which devices form the treatment and the control of a wave, when the bake is
// looked at, and what the comparisons of its signals add up to. Pure: the server's evaluator, the rehearsal and
// the benchmark run exactly this over their own data, and the engine acts on the verdict (rollout.ts).
import { type CohortComparison, type CohortVerdict, compareCohorts } from './cohort-stats.ts';
import type { CompareSpec, WaveSpec } from './plan.ts';
import { type Labels, matches, parseSelector } from './selector.ts';

/** One signal's comparison in a look, with the gate's settings it was judged by. */
export interface SignalVerdict extends CohortComparison {
  signal: string;
  critical: boolean;
  /** Set when another rollout's exposure explains the shift (see attribution.ts): this one is cleared. */
  attributedTo?: string | null;
}

/** A look's outcome. `fail` only when a critical signal fails; a failing non-critical signal is `marginal`. */
export interface EvidenceVerdict {
  verdict: CohortVerdict;
  signals: SignalVerdict[];
}

/** The engine event carrying a look's outcome for the current wave (computed by an evaluator). */
export interface EvidenceEvent extends EvidenceVerdict {
  kind: 'evidence';
  wave: number;
  /** Which look of the wave's bake this is (see nextLook). */
  look: number;
  at: number;
}

/** A look kept in the rollout's state (the status view and the audit show it). */
export interface EvidenceRecord extends EvidenceVerdict {
  wave: number;
  look: number;
  at: number;
  /** Taken at or after the end of the bake (as it stood then): the one that decides. */
  final: boolean;
}

/** Looks kept in a rollout's state: the latest per wave, for at most this many waves. */
export const EVIDENCE_KEPT = 20;
/** How long past the end of the bake the engine waits for the final look before it halts as inconclusive. */
export const EVIDENCE_GRACE_MS = 5 * 60_000;

/**
 * The α each single test runs at: the wave's false-positive rate (1 − confidence) split over every look and
 * every signal (Bonferroni), so repeated looks and many signals never raise the chance of failing a good release
 * above what the plan declares. An extension adds one look.
 */
export function testAlpha(spec: CompareSpec): number {
  const looks = spec.looks + (spec.onMarginal === 'extend' ? 1 : 0);
  return (1 - spec.confidence) / (looks * spec.signals.length);
}

/** A device as cohort assembly sees it: its labels and the version of the rollout's component it runs. */
export interface CohortDevice {
  id: string;
  labels: Labels;
  version: string | null;
  /** Held, pinned or owned by another rollout: often unusual devices, so never the control. */
  held?: boolean;
  pinned?: boolean;
  busy?: boolean;
}

export interface CohortInput {
  /** The current wave's selector: treatment and control come from the same population. */
  select: string;
  /** The rollout's release. */
  target: string;
  /** Devices that run the component. */
  devices: Iterable<CohortDevice>;
  /** When the device's exposure to the release began (it was offered it), or null: never exposed here. */
  exposedAt: (deviceId: string) => number | null;
  /**
   * Each device's latest sample, with the server's time of receipt and the version the device reported with it
   * (absent: not known, e.g. in the rehearsal, where samples are always taken on the running version).
   */
  samples: ReadonlyMap<
    string,
    { values: Readonly<Record<string, number>>; receivedAt: number; version?: string | null }
  >;
  /** Samples received before this (the wave's start) are too old to describe the present. */
  since: number;
  signals: readonly string[];
}

export interface Cohorts {
  treatment: number[];
  control: number[];
}

/**
 * Which side each device of the wave's population is on: the treatment (devices of the selector running the
 * release, sampled after their exposure began) or the control (devices of the selector never exposed and not
 * running it, sampled since the wave started). Other devices are left out.
 */
export function cohortMembers(input: Omit<CohortInput, 'signals'>): Map<string, keyof Cohorts> {
  const sel = parseSelector(input.select);
  const out = new Map<string, keyof Cohorts>();
  for (const d of input.devices) {
    const sample = input.samples.get(d.id);
    if (!sample || sample.receivedAt < input.since || !matches(sel, d.labels)) continue;
    const exposed = input.exposedAt(d.id);
    // A sample reported with another version than the device runs now describes that other version.
    const onTarget = sample.version === undefined || sample.version === input.target;
    if (d.version === input.target && exposed !== null) {
      if (sample.receivedAt >= exposed && onTarget) out.set(d.id, 'treatment');
    } else if (d.version !== input.target && exposed === null && !d.held && !d.pinned && !d.busy) {
      if (sample.version === undefined || sample.version === d.version) out.set(d.id, 'control');
    }
    // Exposed but back on another version, running the release from elsewhere, held, pinned or busy: neither.
  }
  return out;
}

/** Per signal, the cohorts' values: one per device (samples of one device are not independent). */
export function assembleCohorts(input: CohortInput): Map<string, Cohorts> {
  const out = new Map<string, Cohorts>();
  for (const s of input.signals) out.set(s, { treatment: [], control: [] });
  for (const [id, side] of cohortMembers(input)) {
    const values = input.samples.get(id)?.values ?? {};
    for (const s of input.signals) {
      const v = values[s];
      if (typeof v === 'number' && Number.isFinite(v)) out.get(s)?.[side].push(v);
    }
  }
  return out;
}

const RANK: Record<CohortVerdict, number> = { pass: 0, inconclusive: 1, marginal: 2, fail: 3 };

/** Judges every signal of the gate on its cohorts (see testAlpha) and combines them (see EvidenceVerdict). */
export function judgeEvidence(spec: CompareSpec, cohorts: ReadonlyMap<string, Cohorts>): EvidenceVerdict {
  const confidence = 1 - testAlpha(spec);
  const signals = spec.signals.map((g): SignalVerdict => {
    const c = cohorts.get(g.name) ?? { treatment: [], control: [] };
    const r = compareCohorts({
      treatment: c.treatment,
      control: c.control,
      badDirection: g.bad,
      confidence,
      tolerance: g.tolerance,
      minSamples: spec.minSamples,
    });
    return { ...r, signal: g.name, critical: g.critical };
  });
  return { verdict: combine(signals), signals };
}

/** The wave's verdict from its signals' (a non-critical failure counts as marginal). */
export function combine(signals: readonly SignalVerdict[]): CohortVerdict {
  let worst: CohortVerdict = 'pass';
  for (const s of signals) {
    const v: CohortVerdict = s.verdict === 'fail' && !s.critical ? 'marginal' : s.verdict;
    if (RANK[v] > RANK[worst]) worst = v;
  }
  return worst;
}

/**
 * The next look of a wave's bake: its number (1-based) and when it is due, or null when none is left. Looks 1..n
 * split the bake (`bakeMs`, as it started at `bakeStartedAt`) evenly, look n at its end; after an extension one
 * more look, at the new end (`bakeUntil`).
 */
export function nextLook(
  spec: CompareSpec,
  bakeStartedAt: number,
  bakeMs: number,
  bakeUntil: number,
  lastLook: number | null,
): { look: number; at: number } | null {
  const look = (lastLook ?? 0) + 1;
  if (look <= spec.looks) return { look, at: bakeStartedAt + Math.round((bakeMs * look) / spec.looks) };
  const extended = bakeUntil > bakeStartedAt + bakeMs;
  return look === spec.looks + 1 && extended ? { look, at: bakeUntil } : null;
}

const fmt = (v: number | null) => (v === null ? '–' : v.toPrecision(3));

/** One line per signal for reasons and the audit: name, verdict, p, effect and cohort sizes. */
export function describeSignal(s: SignalVerdict): string {
  const sizes = `treatment ${s.n_treatment}, control ${s.n_control}`;
  const moved = s.attributedTo ? `, attributed to ${s.attributedTo}` : '';
  if (s.p === null) return `${s.signal} ${s.verdict} (${sizes}, need more samples)${moved}`;
  return `${s.signal} ${s.verdict} (p=${fmt(s.p)}, effect ${fmt(s.effect)}, ${sizes})${moved}`;
}

/** A signal's numbers as the status view and the audit log record them (snake_case, as the API speaks). */
export function signalNumbers(s: SignalVerdict) {
  return {
    signal: s.signal,
    critical: s.critical,
    u: s.u,
    p: s.p,
    effect: s.effect,
    n_treatment: s.n_treatment,
    n_control: s.n_control,
    attributed_to: s.attributedTo ?? null,
  };
}

/** Why a look's verdict acts, naming the wave and the signals that drove it. */
export function evidenceWhy(wave: WaveSpec, v: EvidenceVerdict): string {
  const driving = v.signals.filter((s) => s.verdict !== 'pass');
  const list = (driving.length ? driving : v.signals).map(describeSignal).join('; ');
  return `wave ${wave.name}: evidence gate ${v.verdict}: ${list}`;
}

/** Keeps `r` as its wave's latest look, bounded (the oldest waves' looks go first). */
export function keepEvidence(
  kept: readonly EvidenceRecord[] | undefined,
  r: EvidenceRecord,
): EvidenceRecord[] {
  const next = (kept ?? []).filter((k) => k.wave !== r.wave);
  next.push(r);
  next.sort((a, b) => a.wave - b.wave);
  return next.length > EVIDENCE_KEPT ? next.slice(next.length - EVIDENCE_KEPT) : next;
}

/** What a look means for the rollout (the engine carries it out). */
export type EvidenceAction =
  | { kind: 'none' }
  | { kind: 'halt'; why: string; action: CompareSpec['onFail'] }
  | { kind: 'extend'; why: string; until: number }
  | { kind: 'approval'; why: string }
  | { kind: 'inconclusive'; why: string };

/**
 * The action of a look of the current, baking wave: a critical failure halts at any look; the final look (at or
 * after the end of the bake) decides the rest — marginal extends the bake once (on_marginal extend), then asks
 * for approval; inconclusive halts without rolling back; pass lets the bake end.
 */
export function evidenceAction(
  wave: WaveSpec,
  waveIndex: number,
  v: EvidenceVerdict,
  final: boolean,
  extended: readonly number[],
  now: number,
): EvidenceAction {
  const spec = wave.compare;
  if (!spec) return { kind: 'none' };
  const why = evidenceWhy(wave, v);
  if (v.verdict === 'fail') return { kind: 'halt', why, action: spec.onFail };
  if (!final || v.verdict === 'pass') return { kind: 'none' };
  if (v.verdict === 'inconclusive') return { kind: 'inconclusive', why };
  if (spec.onMarginal === 'extend' && !extended.includes(waveIndex))
    return { kind: 'extend', why: `${why}; bake extended`, until: now + spec.extendMs };
  return { kind: 'approval', why: `${why}; needs approval to go on` };
}

/**
 * At the end of a bake: whether the wave's final look is in and passed (`go`), still awaited (`wait`, until the
 * grace after `awaitedSince` ends), or missing past the grace (`stale`, why). Waves without a gate always `go`.
 */
export function finalLookState(
  wave: WaveSpec,
  waveIndex: number,
  kept: readonly EvidenceRecord[] | undefined,
  bakeUntil: number,
  awaitedSince: number,
  now: number,
): { kind: 'go' } | { kind: 'wait'; until: number } | { kind: 'stale'; why: string } {
  if (!wave.compare) return { kind: 'go' };
  const last = kept?.find((k) => k.wave === waveIndex);
  if (last && last.at >= bakeUntil && last.verdict === 'pass') return { kind: 'go' };
  const end = awaitedSince + EVIDENCE_GRACE_MS;
  if (now < end) return { kind: 'wait', until: end };
  return {
    kind: 'stale',
    why: `wave ${wave.name}: evidence gate inconclusive, no comparison of the signals at the end of the bake`,
  };
}
