// The rehearsal: the real engine step() against simulated devices in virtual time. A discrete-event loop
// jumps the clock to the next device check-in or engine wake-up, so a week of bake takes seconds.
// The devices (sim-devices.ts) behave like the agent; the control plane (control-plane.ts) runs the engine as
// the server does; the tally (tally.ts) counts what happened. Device timings come from timing.ts: flags, the
// agent configuration, or defaults that fit the plan; a wave whose report_deadline is shorter than the
// modelled time is warned about. A plan with evidence gates gets simulated device signals (signals.ts), its
// looks taken as the server takes them (evidence-looks.ts), and a second run of the same rehearsal without
// them, to show when a pure failure budget would have fired. The same options and seed give the same result,
// byte for byte.
import type { Plan } from '../engine/plan.ts';
import { TERMINAL } from '../engine/rollout.ts';
import { type ControlPlaneSetup, SimControlPlane } from './control-plane.ts';
import { EventQueue } from './event-queue.ts';
import { EvidenceLooks } from './evidence-looks.ts';
import { assignFaults, type Fault, type FaultAssignment } from './faults.ts';
import { engineView, type SimFleet } from './fleet.ts';
import { createRng } from './prng.ts';
import type { EvidenceGatesView, Progress, RehearsalResult } from './rehearsal-result.ts';
import { comparedSignals, SimSignals } from './signals.ts';
import { SimDevices } from './sim-devices.ts';
import { pct, Tally } from './tally.ts';
import { resolveTiming, type TimingModel, timeToReport, timingWarnings } from './timing.ts';

export type {
  EvidenceGatesView,
  EvidenceLookView,
  Progress,
  RehearsalResult,
  SeriesPoint,
  TransitionView,
  WaveOutcome,
} from './rehearsal-result.ts';

export interface RehearsalOptions {
  plan: Plan;
  fleet: SimFleet;
  faults?: readonly Fault[];
  seed?: string | number;
  /** Virtual start (ms since epoch); fixed by default so runs are comparable. */
  start?: number;
  // Device timings (src/sim/timing.ts); each defaults as resolveTiming() says. Or give the whole model.
  pollMs?: number; // device check-in interval (default: the server's default, 30 s)
  installMs?: [number, number]; // download + stage + switch, uniform range (default: fits the plan)
  probationMs?: number; // health checks after the switch before commit (default: fits the plan)
  tickMs?: number; // how often the control plane steps after news (the server steps on reports)
  timing?: TimingModel;
  approveAfterMs?: number | null; // an operator approves gated waves after this; null = never
  horizonMs?: number; // give up after this much virtual time
  emergency?: boolean;
  component?: string;
  version?: string;
  fromVersion?: string | null;
  /** Baseline mean (events per check-in) of signals the plan's evidence gates compare; default 1 each. */
  signals?: Readonly<Record<string, number>>;
  /** Called about once a second of wall time on long runs. */
  progress?: (p: Progress) => void;
}

const DEFAULT_START = Date.UTC(2026, 0, 5, 8, 0, 0); // a Monday morning, UTC
const DAY_MS = 86_400_000;

/** The options with every default filled in. */
interface Settings {
  plan: Plan;
  fleet: SimFleet;
  faults: readonly Fault[];
  seed: string;
  start: number;
  timing: TimingModel;
  approveAfterMs: number | null;
  horizonMs: number;
  emergency: boolean;
  component: string;
  version: string;
  fromVersion: string | null;
  signalMeans: Readonly<Record<string, number>>;
}

/** The parts of one running rehearsal. */
interface World {
  /** Each device id's index in the simulation's arrays. */
  index: ReadonlyMap<string, number>;
  queue: EventQueue;
  tally: Tally;
  devices: SimDevices;
  control: SimControlPlane;
  /** The evidence-gate looks, when the plan has evidence gates. */
  evidence: EvidenceLooks | null;
  signals: SimSignals | null;
}

/** How the event loop ended. */
interface LoopEnd {
  now: number; // virtual time of the last event
  events: number; // device events run
  horizonReached: boolean;
}

/**
 * Runs one rehearsal to its end (a terminal state, quiet, or the horizon) and reports what happened. With
 * evidence gates, also when each gate would have fired (see EvidenceGatesView).
 */
export function rehearse(opts: RehearsalOptions): RehearsalResult {
  const s = settingsOf(opts);
  const signals = checkSignals(s);
  const { result, world } = runOnce(s, signals, opts.progress);
  if (!world.evidence || !world.signals) return result;
  // The same rehearsal, draw for draw, with the comparison gates taken out: only the failure budget judges.
  const budget = runOnce({ ...s, plan: withoutCompare(s.plan) }, [], undefined);
  result.evidence_gates = evidenceGatesOf(world.evidence, world.signals, budget);
  return result;
}

/** One run of the event loop over a fresh world; `signals`: the ones to simulate (none: no evidence gates). */
function runOnce(
  s: Settings,
  signals: readonly string[],
  progress: RehearsalOptions['progress'],
): { result: RehearsalResult; world: World } {
  const rng = createRng(s.seed);
  // The random draws come in a fixed order — faults, then check-in phases, then device events — so that a
  // seed always gives the same rehearsal. Signals draw from a stream of their own.
  const faults = assignFaults(s.fleet, s.faults, rng);
  const queue = new EventQueue();
  const tally = new Tally(s.plan, s.fleet.ids.length, s.start);
  const index = indexOf(s.fleet);
  const sim = signals.length
    ? new SimSignals(signals, s.signalMeans, s.faults, s.fleet.labels, createRng(`signals:${s.seed}`))
    : null;
  // Devices report to the control plane, which is made next (no report is sent before the loop runs); the
  // control plane's looks read the devices.
  const devices = new SimDevices(s.fleet.ids.length, {
    start: s.start,
    timing: s.timing,
    faults,
    rng,
    queue,
    tally,
    deliver: (i, report, t) => control.receive(i, report, t),
    trackRelease: sim !== null,
  });
  const evidence = sim
    ? new EvidenceLooks({
        plan: s.plan,
        fleet: s.fleet,
        version: s.version,
        fromVersion: s.fromVersion,
        start: s.start,
        devices,
        signals: sim,
        rng: createRng(`checkins:${s.seed}`),
        installed: () => tally.installed,
      })
    : null;
  const control = new SimControlPlane({
    plan: s.plan,
    devices: engineView(s.fleet, s.fromVersion),
    index,
    component: s.component,
    version: s.version,
    fromVersion: s.fromVersion,
    emergency: s.emergency,
    start: s.start,
    tickMs: s.timing.tickMs,
    approveAfterMs: s.approveAfterMs,
    tally,
    metricFaults: metricFaultsOf(s),
    evidence: evidence ?? undefined,
  });
  const world: World = { index, queue, tally, devices, control, evidence, signals: sim };
  const end = runEvents(world, s, progress);
  return { result: resultOf(s, world, faults, end), world };
}

/**
 * The signals to simulate: those the plan's evidence gates compare. A shift fault or a baseline mean naming
 * another is an error, not a rehearsal that silently tests nothing.
 */
function checkSignals(s: Settings): string[] {
  const names = comparedSignals(s.plan);
  const known = new Set(names);
  for (const f of s.faults)
    if (f.shift && !known.has(f.shift.name))
      throw new Error(`fault "${f.spec}": the plan's evidence gates compare no signal named ${f.shift.name}`);
  for (const name of Object.keys(s.signalMeans))
    if (!known.has(name))
      throw new Error(`--signal ${name}: the plan's evidence gates compare no signal named ${name}`);
  return names;
}

/** The plan with every evidence gate removed (the failure budget and the other gates stay). */
function withoutCompare(plan: Plan): Plan {
  return { ...plan, waves: plan.waves.map((w) => ({ ...w, compare: null })) };
}

/** When each gate fired: the comparison gate's looks here, and the failure budget's run without them. */
function evidenceGatesOf(
  looks: EvidenceLooks,
  signals: SimSignals,
  budget: { result: RehearsalResult; world: World },
): EvidenceGatesView {
  const b = budget.result;
  const halted = budget.world.control.haltedAt !== null;
  const stopped = new Set(['halted', 'rolling-back', 'rolled-back', 'awaiting-approval']);
  return {
    signals: signals.baseline(),
    looks: looks.looks,
    comparison: looks.looks.find((l) => l.verdict !== 'pass' && stopped.has(l.status_after)) ?? null,
    failure_budget: {
      end_state: b.end_state,
      halted,
      at_ms: b.time_to_halt_ms,
      wave: b.halted_at_wave,
      installed: halted ? (budget.world.control.installedAtHalt ?? b.exposed) : b.exposed,
      reason: b.reason,
      time_to_complete_ms: b.time_to_complete_ms,
    },
  };
}

/** Fills in the defaults of the options. */
function settingsOf(opts: RehearsalOptions): Settings {
  return {
    plan: opts.plan,
    fleet: opts.fleet,
    faults: opts.faults ?? [],
    seed: String(opts.seed ?? 1),
    start: opts.start ?? DEFAULT_START,
    timing:
      opts.timing ??
      resolveTiming(opts.plan, {
        pollMs: opts.pollMs,
        applyMs: opts.installMs,
        healthMs: opts.probationMs,
        tickMs: opts.tickMs,
      }),
    approveAfterMs: opts.approveAfterMs === undefined ? 0 : opts.approveAfterMs,
    horizonMs: opts.horizonMs ?? 60 * DAY_MS,
    emergency: opts.emergency ?? false,
    component: opts.component ?? 'sensor-content',
    version: opts.version ?? 'next',
    fromVersion: opts.fromVersion === undefined ? 'current' : opts.fromVersion,
    signalMeans: opts.signals ?? {},
  };
}

/**
 * The metric faults with the wave each waits for resolved (by name, else by number from 1); a fault naming no
 * wave or no metric gate of the plan is an error, not a rehearsal that silently tests nothing.
 */
function metricFaultsOf(s: Settings): NonNullable<ControlPlaneSetup['metricFaults']> {
  const gates = new Set(s.plan.waves.flatMap((w) => (w.metrics ?? []).map((g) => g.name)));
  return s.faults.flatMap((f) => {
    const m = f.metric;
    if (!m) return [];
    if (!gates.has(m.name)) throw new Error(`fault "${f.spec}": the plan has no metric gate named ${m.name}`);
    let waveIndex: number | null = null;
    if (m.wave !== null) {
      const byName = s.plan.waves.findIndex((w) => w.name === m.wave);
      const byNumber = /^\d+$/.test(m.wave) ? Number(m.wave) - 1 : -1;
      waveIndex = byName >= 0 ? byName : byNumber >= 0 && byNumber < s.plan.waves.length ? byNumber : -1;
      if (waveIndex < 0) throw new Error(`fault "${f.spec}": the plan has no wave ${m.wave}`);
    }
    return [{ ...m, waveIndex }];
  });
}

/** Each device id's index in the simulation's arrays. */
function indexOf(fleet: SimFleet): Map<string, number> {
  const index = new Map<string, number>();
  for (let i = 0; i < fleet.ids.length; i++) index.set(fleet.ids[i], i);
  return index;
}

/**
 * The discrete-event loop: jumps to whichever comes first, the engine's next step or the next device event,
 * until nothing is left, the rollout ended with no device event pending, or the horizon passed.
 */
function runEvents(world: World, s: Settings, progress: RehearsalOptions['progress']): LoopEnd {
  const { queue, tally, devices, control } = world;
  let now = s.start;
  let events = 0;
  let lastProgress = Date.now();
  for (;;) {
    const tEvent = queue.peekTime();
    const tNext = Math.min(tEvent, control.stepDue);
    if (!Number.isFinite(tNext)) break;
    if (tNext - s.start > s.horizonMs) return { now, events, horizonReached: true };
    now = tNext;
    if (control.stepDue <= tEvent) {
      stepEngine(world, now);
      if (TERMINAL.has(control.rollout.status) && queue.size === 0) break;
      continue;
    }
    devices.handle(queue.pop(), now);
    events++;
    tally.sample(now);
    if (progress && (events & 4095) === 0 && Date.now() - lastProgress > 1000) {
      lastProgress = Date.now();
      progress(progressOf(s, world, now, events));
    }
  }
  return { now, events, horizonReached: false };
}

/** One engine step: the control plane decides, the devices get their commands, the tally samples. */
function stepEngine(world: World, t: number): void {
  const { tally, devices, control, index } = world;
  for (const c of control.step(t)) {
    const i = index.get(c.deviceId);
    if (i !== undefined) devices.command(i, c.kind, t);
  }
  tally.sample(t);
}

function progressOf(s: Settings, world: World, now: number, events: number): Progress {
  const rollout = world.control.rollout;
  return {
    virtualMs: now - s.start,
    wave: s.plan.waves[rollout.wave]?.name ?? null,
    status: rollout.status,
    installed: world.tally.installed,
    events,
  };
}

/** Why the rehearsal stopped short of a terminal state (null when it did not, or when a halt is the end). */
function unfinishedWhy(s: Settings, control: SimControlPlane, end: LoopEnd): string | null {
  const status = control.rollout.status;
  if (end.horizonReached)
    return `stopped at the ${Math.round(s.horizonMs / DAY_MS)}-day horizon in state ${status}`;
  if (TERMINAL.has(status) || status === 'halted') return null;
  if (status === 'rolling-back') {
    const stuck = [...control.assignments.values()].filter((a) => a.state === 'reverting').length;
    return `${stuck} devices never confirmed their rollback`;
  }
  return `the rollout went quiet in state ${status}`;
}

/** The rehearsal's result, from its settings and the state it ended in. */
function resultOf(s: Settings, world: World, faults: FaultAssignment, end: LoopEnd): RehearsalResult {
  const { tally, control } = world;
  const { plan, timing, start } = s;
  const n = s.fleet.ids.length;
  const rollout = control.rollout;
  tally.sample(end.now);
  return {
    plan: plan.name,
    seed: s.seed,
    fleet: n,
    faults: s.faults.map((f) => ({ spec: f.spec, devices: faults.affected[f.spec] ?? 0 })),
    settings: {
      poll_ms: timing.pollMs,
      apply_ms: [timing.applyMs[0], timing.applyMs[1]],
      probation_ms: timing.healthMs,
      tick_ms: timing.tickMs,
      time_to_report_ms: timeToReport(timing),
      sources: timing.sources,
      start: new Date(start).toISOString(),
      emergency: s.emergency,
    },
    warnings: timingWarnings(plan, timing),
    end_state: rollout.status,
    reason: rollout.reason,
    halted_at_wave:
      control.haltedAt !== null ? (plan.waves[rollout.haltedAtWave ?? rollout.wave]?.name ?? null) : null,
    waves: tally.waves,
    exposed: tally.installed,
    exposed_percent: pct(tally.installed, n),
    peak_running: tally.peak,
    peak_running_percent: pct(tally.peak, n),
    time_to_halt_ms: control.haltedAt === null ? null : control.haltedAt - start,
    time_to_complete_ms:
      rollout.status === 'completed' && rollout.finishedAt ? rollout.finishedAt - start : null,
    virtual_ms: end.now - start,
    unfinished: unfinishedWhy(s, control, end),
    steps: control.steps,
    device_events: end.events,
    transitions: control.transitions,
    series: tally.seriesPoints(600),
  };
}
