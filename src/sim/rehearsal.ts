// The rehearsal: the real engine step() against simulated devices in virtual time. A discrete-event loop
// jumps the clock to the next device check-in or engine wake-up, so a week of bake takes seconds.
// Devices behave like the agent: they act only when they check in (pull), install beside the running
// release, judge health during probation, roll back on their own, and report at once (the agent checks in
// again right after a transaction). Device timings come from timing.ts: flags, the agent configuration, or
// defaults that fit the plan; a wave whose report_deadline is shorter than the modelled time is warned about.
import type { Plan } from '../engine/plan.ts';
import {
  type Assignment,
  applyReport,
  type EngineEvent,
  newRollout,
  type RolloutState,
  step,
  TERMINAL,
  type Transition,
} from '../engine/rollout.ts';
import { EventQueue } from './event-queue.ts';
import { assignFaults, F_CRASH, F_FAIL, F_FLAKY, F_NEVER, F_OFFLINE, F_SLOW, type Fault } from './faults.ts';
import { engineView, type SimFleet } from './fleet.ts';
import { createRng } from './prng.ts';
import {
  resolveTiming,
  type TimingModel,
  type TimingWarning,
  timeToReport,
  timingWarnings,
} from './timing.ts';

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
  /** Called about once a second of wall time on long runs. */
  progress?: (p: Progress) => void;
}

export interface Progress {
  virtualMs: number;
  wave: string | null;
  status: string;
  exposed: number;
  events: number;
}

export interface WaveOutcome {
  name: string;
  selected: number; // devices the engine chose for the wave
  offered: number;
  exposed: number; // devices that received (installed) the release
  succeeded: number;
  failed: number; // devices that reported a failure or missed their report deadline
  rolled_back: number; // devices back on their previous release (boot guard, health, or rollout rollback)
  skipped: number;
  reached_at_ms: number | null; // virtual time since start when the wave started
}

export interface SeriesPoint {
  t: number; // ms since start
  running: number; // devices running the release at this instant
  exposed: number; // devices that have ever received it
  failed: number;
}

export interface RehearsalResult {
  plan: string;
  seed: string;
  fleet: number;
  faults: Array<{ spec: string; devices: number }>;
  settings: {
    poll_ms: number;
    apply_ms: [number, number];
    probation_ms: number; // health time
    tick_ms: number;
    time_to_report_ms: number; // the longest a healthy device takes from an offer to its report
    sources: TimingModel['sources'];
    start: string;
    emergency: boolean;
  };
  /** Waves whose report_deadline is shorter than the modelled time to report (healthy devices may miss it). */
  warnings: TimingWarning[];
  end_state: string;
  reason: string | null;
  halted_at_wave: string | null;
  waves: WaveOutcome[];
  exposed: number;
  exposed_percent: number;
  peak_running: number; // most devices running the release at the same instant
  peak_running_percent: number;
  time_to_halt_ms: number | null;
  time_to_complete_ms: number | null;
  virtual_ms: number; // virtual time until the simulation went quiet
  unfinished: string | null; // why the rehearsal stopped before a terminal state, if it did
  steps: number;
  device_events: number;
  transitions: Array<{ at_ms: number; from: string; to: string; wave: string | null; why: string }>;
  series: SeriesPoint[];
}

// Device event kinds (low 3 bits of the payload; the device index above them).
const EV_CHECKIN = 0;
const EV_OUTCOME = 1;

// Desired state as the device sees it on its next check-in.
const WANT_NONE = 0;
const WANT_TARGET = 1;
const WANT_REVERT = 2;

// Report waiting to be sent.
const REP_NONE = 0;
const REP_OK = 1;
const REP_FAILED = 2;
const REP_REVERTED = 3;

const DEFAULT_START = Date.UTC(2026, 0, 5, 8, 0, 0); // a Monday morning, UTC

export function rehearse(opts: RehearsalOptions): RehearsalResult {
  const { plan, fleet } = opts;
  const n = fleet.ids.length;
  const seed = String(opts.seed ?? 1);
  const rng = createRng(seed);
  const start = opts.start ?? DEFAULT_START;
  const timing =
    opts.timing ??
    resolveTiming(plan, {
      pollMs: opts.pollMs,
      applyMs: opts.installMs,
      healthMs: opts.probationMs,
      tickMs: opts.tickMs,
    });
  const poll = timing.pollMs;
  const [installMin, installMax] = timing.applyMs;
  const probation = timing.healthMs;
  const tick = timing.tickMs;
  const approveAfter = opts.approveAfterMs === undefined ? 0 : opts.approveAfterMs;
  const horizon = opts.horizonMs ?? 60 * 86_400_000;
  const component = opts.component ?? 'sensor-content';
  const version = opts.version ?? 'next';
  const fromVersion = opts.fromVersion === undefined ? 'current' : opts.fromVersion;
  const faults = opts.faults ?? [];
  const fa = assignFaults(fleet, faults, rng);

  // Per-device simulation state, in typed arrays.
  const phase = new Float64Array(n); // check-in phase within the poll interval
  for (let i = 0; i < n; i++) phase[i] = Math.floor(rng.next() * poll);
  const want = new Uint8Array(n);
  const running = new Uint8Array(n); // 1 while the device runs the release
  const received = new Uint8Array(n);
  const installing = new Uint8Array(n);
  const pending = new Uint8Array(n); // report to send
  const reportNotBefore = new Float64Array(n);
  const scheduled = new Uint8Array(n); // a check-in event is queued
  const rolledBack = new Uint8Array(n);
  const failedFlag = new Uint8Array(n); // the device failed (reported, or missed its deadline)
  const waveOf = new Int16Array(n).fill(-1);
  const index = new Map<string, number>();
  for (let i = 0; i < n; i++) index.set(fleet.ids[i], i);

  const devices = engineView(fleet, fromVersion);
  const assignments = new Map<string, Assignment>();
  let rollout: RolloutState = newRollout({
    id: 'rehearsal',
    component,
    version,
    emergency: opts.emergency ?? false,
    releaseCreatedAt: start,
    now: start,
  });

  const waves: WaveOutcome[] = plan.waves.map((w) => ({
    name: w.name,
    selected: 0,
    offered: 0,
    exposed: 0,
    succeeded: 0,
    failed: 0,
    rolled_back: 0,
    skipped: 0,
    reached_at_ms: null,
  }));
  const transitions: RehearsalResult['transitions'] = [];
  const series: SeriesPoint[] = [];
  const queue = new EventQueue();
  let runningCount = 0;
  let exposedCount = 0;
  let failedCount = 0;
  let peak = 0;
  let events = 0;
  let steps = 0;
  let now = start;
  let stepDue = start; // the first step runs at the start
  let wakeAt: number | null = null;
  let approveAt: number | null = null;
  let haltedAt: number | null = null;

  const nextCheckin = (i: number, t: number): number => {
    const base = start + phase[i];
    if (t <= base) return base;
    return base + Math.ceil((t - base) / poll) * poll;
  };
  const schedule = (i: number, t: number) => {
    if (scheduled[i]) return;
    scheduled[i] = 1;
    queue.push(nextCheckin(i, t), i * 8 + EV_CHECKIN);
  };
  /** The agent checks in again right after a transaction; its poll timer starts over from there. */
  const reportSoon = (i: number, t: number) => {
    phase[i] = (t + 1 - start) % poll;
    schedule(i, t + 1);
  };
  const newsAt = (t: number) => {
    const at = Math.ceil((t - start) / tick) * tick + start;
    if (at < stepDue) stepDue = at;
  };
  const track = (a: Assignment, prev: Assignment | undefined) => {
    const w = waves[a.wave];
    if (!prev) {
      w.selected++;
      waveOf[index.get(a.deviceId)!] = a.wave;
    }
    if (a.state === prev?.state) return;
    if (a.state === 'offered') w.offered++;
    if (a.state === 'succeeded' && prev?.state !== 'succeeded') w.succeeded++;
    if (a.state === 'failed') {
      markFailed(index.get(a.deviceId)!);
      if (prev?.state === 'succeeded') w.succeeded--;
    }
    if (a.state === 'skipped') {
      w.skipped++;
      w.selected--;
    }
  };
  // A device counts as failed once, whether the engine saw it fail or its report came after the halt.
  const markFailed = (i: number) => {
    if (failedFlag[i]) return;
    failedFlag[i] = 1;
    failedCount++;
    if (waveOf[i] >= 0) waves[waveOf[i]].failed++;
  };
  const windowed = (wave: number) => !!(plan.deviceWindows || plan.waves[wave]?.window);
  const setAssignment = (a: Assignment) => {
    const prev = assignments.get(a.deviceId);
    assignments.set(a.deviceId, a);
    track(a, prev);
  };
  // Device events are sampled into 15 s buckets: the chart sees check-ins between engine steps.
  const sample = (t: number) => {
    const last = series[series.length - 1];
    if (last && last.running === runningCount && last.exposed === exposedCount && last.failed === failedCount)
      return;
    const bucket = Math.floor((t - start) / 15_000) * 15_000;
    const p = { t: bucket, running: runningCount, exposed: exposedCount, failed: failedCount };
    if (last && last.t === bucket) series[series.length - 1] = p;
    else series.push(p);
  };
  const report = (i: number, t: number) => {
    const a = assignments.get(fleet.ids[i]);
    const kind = pending[i];
    pending[i] = REP_NONE;
    if (!a) return;
    if (kind === REP_FAILED) markFailed(i);
    const r =
      kind === REP_REVERTED
        ? { outcome: 'succeeded' as const, version: fromVersion ?? '', target: version, at: t }
        : {
            outcome: kind === REP_OK ? ('succeeded' as const) : ('failed' as const),
            version,
            target: version,
            reason:
              kind === REP_FAILED
                ? fa.mask[i] & F_CRASH
                  ? 'boot: crash loop'
                  : 'health check failed'
                : null,
            at: t,
          };
    const next = applyReport(a, r);
    if (next) {
      setAssignment(next);
      newsAt(t);
    }
  };

  /** One device check-in: lost, or send the waiting report, then act on what the server wants. */
  const checkin = (i: number, t: number) => {
    scheduled[i] = 0;
    const m = fa.mask[i];
    if (m & F_OFFLINE && t - start < fa.offlineUntilMs[i]) {
      if (Number.isFinite(fa.offlineUntilMs[i])) schedule(i, start + fa.offlineUntilMs[i]);
      return;
    }
    if (m & F_FLAKY && rng.next() < fa.loss[i]) {
      schedule(i, t + 1);
      return;
    }
    if (pending[i] !== REP_NONE) {
      if (m & F_NEVER)
        pending[i] = REP_NONE; // the report is lost, every time
      else if (t < reportNotBefore[i]) schedule(i, reportNotBefore[i]);
      else report(i, t);
    }
    if (installing[i]) return; // the outcome event takes it from here
    if (want[i] === WANT_TARGET && !received[i] && !running[i]) {
      // Pull: stage beside the running release, switch, then probation.
      received[i] = 1;
      installing[i] = 1;
      running[i] = 1;
      runningCount++;
      exposedCount++;
      if (runningCount > peak) peak = runningCount;
      const w = waveOf[i];
      if (w >= 0) waves[w].exposed++;
      const dur = installMin + Math.floor(rng.next() * (installMax - installMin + 1));
      // A crash loop is caught by the boot guard within a few boots; health failures at the end of probation.
      queue.push(t + dur + (m & F_CRASH ? Math.min(probation, 3 * 60_000) : probation), i * 8 + EV_OUTCOME);
      return;
    }
    if (want[i] === WANT_REVERT) {
      want[i] = WANT_NONE;
      if (running[i]) {
        running[i] = 0;
        runningCount--;
        rolledBack[i] = 1;
        const w = waveOf[i];
        if (w >= 0) waves[w].rolled_back++;
      }
      pending[i] = REP_REVERTED;
      reportNotBefore[i] = t + (m & F_SLOW ? fa.slowMs[i] : 0);
      reportSoon(i, t);
    }
  };

  const outcome = (i: number, t: number) => {
    installing[i] = 0;
    const m = fa.mask[i];
    if (m & (F_CRASH | F_FAIL)) {
      // The device returns to its last known good release on its own.
      if (running[i]) {
        running[i] = 0;
        runningCount--;
        rolledBack[i] = 1;
        const w = waveOf[i];
        if (w >= 0) waves[w].rolled_back++;
      }
      pending[i] = REP_FAILED;
    } else pending[i] = REP_OK;
    reportNotBefore[i] = t + (m & F_SLOW ? fa.slowMs[i] : 0);
    if (want[i] === WANT_REVERT && pending[i] === REP_FAILED) want[i] = WANT_NONE; // already back
    reportSoon(i, t);
  };

  const runStep = (t: number) => {
    const ev: EngineEvent[] = [];
    if (approveAt !== null && t >= approveAt) {
      ev.push({ kind: 'approve', actor: 'rehearsal' });
      approveAt = null;
    }
    const out = step({ plan, rollout, assignments, devices, events: ev, now: t });
    steps++;
    const prevStatus = rollout.status;
    rollout = out.rollout;
    for (const a of out.changed) {
      // A device that missed its deadline and is reverted in the same step never shows as `failed` in the
      // changes (the engine's last word wins): count it here. Only where no maintenance window governs the
      // device, because a window stretches the deadline in ways the engine alone knows.
      const prev = assignments.get(a.deviceId);
      if (
        prev?.state === 'offered' &&
        prev.offeredAt !== null &&
        (a.state === 'reverting' || a.state === 'reverted' || a.state === 'unconfirmed') &&
        !windowed(a.wave) &&
        t >= prev.offeredAt + plan.waves[a.wave].reportDeadlineMs
      )
        markFailed(index.get(a.deviceId)!);
      setAssignment(a);
    }
    for (const tr of out.transitions) transitions.push(view(tr));
    for (const tr of out.transitions) {
      if (tr.why.startsWith('wave ') && tr.why.includes(' started with ')) {
        const w = waves[tr.wave];
        if (w && w.reached_at_ms === null) w.reached_at_ms = tr.at - start;
      }
    }
    for (const c of out.commands) {
      const i = index.get(c.deviceId);
      if (i === undefined) continue;
      if (c.kind === 'offer') want[i] = WANT_TARGET;
      else if (c.kind === 'revert') want[i] = WANT_REVERT;
      else want[i] = WANT_NONE;
      schedule(i, t);
    }
    if ((rollout.status === 'halted' || rollout.status === 'rolling-back') && haltedAt === null) haltedAt = t;
    if (rollout.status === 'awaiting-approval' && prevStatus !== 'awaiting-approval' && approveAfter !== null)
      approveAt = t + approveAfter;
    wakeAt = out.wakeAt;
    stepDue = Number.POSITIVE_INFINITY;
    if (wakeAt !== null) stepDue = Math.max(wakeAt, t + 1);
    if (approveAt !== null) stepDue = Math.min(stepDue, Math.max(approveAt, t + 1));
    sample(t);
  };

  const view = (tr: Transition) => ({
    at_ms: tr.at - start,
    from: tr.from,
    to: tr.to,
    wave: plan.waves[tr.wave]?.name ?? null,
    why: tr.why,
  });

  let unfinished: string | null = null;
  let lastProgress = Date.now();
  for (;;) {
    const tEv = queue.peekTime();
    const tNext = Math.min(tEv, stepDue);
    if (!Number.isFinite(tNext)) break;
    if (tNext - start > horizon) {
      unfinished = `stopped at the ${Math.round(horizon / 86_400_000)}-day horizon in state ${rollout.status}`;
      break;
    }
    now = tNext;
    if (stepDue <= tEv) {
      runStep(now);
      if (TERMINAL.has(rollout.status) && queue.size === 0) break;
      continue;
    }
    const payload = queue.pop();
    events++;
    const i = payload >> 3;
    if ((payload & 7) === EV_CHECKIN) checkin(i, now);
    else outcome(i, now);
    if (runningCount > peak) peak = runningCount;
    sample(now);
    if (opts.progress && (events & 4095) === 0 && Date.now() - lastProgress > 1000) {
      lastProgress = Date.now();
      opts.progress({
        virtualMs: now - start,
        wave: plan.waves[rollout.wave]?.name ?? null,
        status: rollout.status,
        exposed: exposedCount,
        events,
      });
    }
  }
  sample(now);
  if (!unfinished && !TERMINAL.has(rollout.status)) {
    const stuck = [...assignments.values()].filter((a) => a.state === 'reverting').length;
    unfinished =
      rollout.status === 'rolling-back'
        ? `${stuck} devices never confirmed their rollback`
        : rollout.status === 'halted'
          ? null
          : `the rollout went quiet in state ${rollout.status}`;
  }
  const halted = haltedAt !== null;
  return {
    plan: plan.name,
    seed,
    fleet: n,
    faults: faults.map((f) => ({ spec: f.spec, devices: fa.affected[f.spec] ?? 0 })),
    settings: {
      poll_ms: poll,
      apply_ms: [installMin, installMax],
      probation_ms: probation,
      tick_ms: tick,
      time_to_report_ms: timeToReport(timing),
      sources: timing.sources,
      start: new Date(start).toISOString(),
      emergency: opts.emergency ?? false,
    },
    warnings: timingWarnings(plan, timing),
    end_state: rollout.status,
    reason: rollout.reason,
    halted_at_wave: halted ? (plan.waves[rollout.haltedAtWave ?? rollout.wave]?.name ?? null) : null,
    waves,
    exposed: exposedCount,
    exposed_percent: pct(exposedCount, n),
    peak_running: peak,
    peak_running_percent: pct(peak, n),
    time_to_halt_ms: haltedAt === null ? null : haltedAt - start,
    time_to_complete_ms:
      rollout.status === 'completed' && rollout.finishedAt ? rollout.finishedAt - start : null,
    virtual_ms: now - start,
    unfinished,
    steps,
    device_events: events,
    transitions,
    series: downsample(series, 600),
  };
}

function pct(a: number, n: number): number {
  return n === 0 ? 0 : Math.round((a * 10000) / n) / 100;
}

/** Keeps at most max points, always the first, the last and each bucket's peak of running devices. */
function downsample(points: SeriesPoint[], max: number): SeriesPoint[] {
  if (points.length <= max) return points;
  const out: SeriesPoint[] = [points[0]];
  const bucket = (points.length - 2) / (max - 2);
  for (let b = 0; b < max - 2; b++) {
    let best = points[1 + Math.floor(b * bucket)];
    const end = Math.min(points.length - 1, 1 + Math.floor((b + 1) * bucket));
    for (let k = 1 + Math.floor(b * bucket); k < end; k++)
      if (points[k].running > best.running) best = points[k];
    out.push(best);
  }
  out.push(points[points.length - 1]);
  return out;
}
