// Fault models for a rehearsal: KIND[:RATE][:PARAM][@SELECTOR], e.g. "crash", "fail:5%@tier=A",
// "slow:20%:2h", "offline:3%:6h", "flaky:10%:50%", "never:1%"; and metric faults, which move a simulated metric
// that metric gates read: "metric:error_ratio=0.2@wave=2", "metric:latency=900@after=3h"; and signal shifts,
// which scale a device signal that evidence gates compare: "shift:restarts:+100%@tier=B".
import { parseDuration } from '../engine/duration.ts';
import { matches, parseSelector, type Selector } from '../engine/selector.ts';
import type { SimFleet } from './fleet.ts';
import type { Rng } from './prng.ts';

export type FaultKind = 'crash' | 'fail' | 'slow' | 'offline' | 'flaky' | 'never' | 'metric' | 'shift';

/**
 * A metric fault: from when wave `wave` starts (its name, or its number counting from 1), or `afterMs` into the
 * rehearsal, the simulated metric `name` reads `value`. A metric gate reads the metric named like the gate.
 */
export interface MetricFault {
  name: string;
  value: number;
  wave: string | null;
  afterMs: number | null;
}

/**
 * A signal shift: devices of the selector that run the new release report the signal `name` with its mean
 * scaled by (1 + shift), from the start of the rehearsal (see signals.ts).
 */
export interface ShiftFault {
  name: string;
  /** −1 (the signal vanishes) or more; +1 doubles it. */
  shift: number;
}

export interface Fault {
  spec: string;
  kind: FaultKind;
  rate: number; // share of the selected devices affected, 0..1
  /** slow: extra delay before reporting; offline: how long the device is away (Infinity = whole run). */
  durationMs: number;
  /** flaky: probability that one check-in is lost. */
  loss: number;
  selector: Selector;
  /** Set on kind `metric` only (it hits no device). */
  metric?: MetricFault;
  /** Set on kind `shift` only (it draws nothing when faults are assigned). */
  shift?: ShiftFault;
}

export const FAULT_HELP = [
  'crash[:RATE][@SEL]          crash-loop on install; the boot guard rolls back, the device reports a failure',
  'fail:RATE[@SEL]             health checks fail after install; the agent rolls back and reports',
  'slow:RATE[:DELAY][@SEL]     reports arrive DELAY late (default 1h)',
  'offline:RATE[:FOR][@SEL]    devices do not check in for FOR (default: the whole rehearsal)',
  'flaky:RATE[:LOSS][@SEL]     each check-in is lost with probability LOSS (default 50%)',
  'never:RATE[@SEL]            devices install but their reports never arrive',
  'metric:NAME=VALUE[@wave=W|@after=DUR]  the metric gate NAME reads VALUE from wave W (name or number) or DUR on',
  'shift:NAME:±PCT%[@SEL]      devices on the new release report signal NAME with its mean moved by PCT',
].join('\n');

const KINDS: ReadonlySet<string> = new Set(['crash', 'fail', 'slow', 'offline', 'flaky', 'never']);

/** Parses "metric:NAME=VALUE[@wave=W|@after=DUR]"; throws a one-line error naming the spec. */
function parseMetricFault(spec: string): Fault {
  const m = /^metric:([A-Za-z0-9_.-]+)=([^@]+)(?:@(wave|after)=(.+))?$/.exec(spec.trim());
  if (!m) throw new Error(`fault "${spec}": expected metric:NAME=VALUE[@wave=W|@after=DURATION]`);
  const value = Number(m[2].trim());
  if (m[2].trim() === '' || !Number.isFinite(value))
    throw new Error(`fault "${spec}": "${m[2]}" is not a number`);
  const metric: MetricFault = { name: m[1], value, wave: null, afterMs: null };
  if (m[3] === 'wave') metric.wave = m[4].trim();
  if (m[3] === 'after') metric.afterMs = parseDuration(m[4].trim());
  return { spec, kind: 'metric', rate: 0, durationMs: 0, loss: 0, selector: parseSelector('*'), metric };
}

/** Parses "shift:NAME:+100%[@SELECTOR]"; throws a one-line error naming the spec. */
function parseShiftFault(spec: string): Fault {
  const m = /^shift:([a-z_][a-z0-9_]{0,63}):([^@]*)(?:@(.*))?$/.exec(spec.trim());
  if (!m)
    throw new Error(`fault "${spec}": expected shift:SIGNAL:+PCT%[@SELECTOR], e.g. shift:restarts:+100%`);
  const pct = /^([+-]?)(\d+(?:\.\d+)?)%$/.exec(m[2].trim());
  if (!pct) throw new Error(`fault "${spec}": "${m[2]}" is not a shift like +100% or -30%`);
  const shift = (pct[1] === '-' ? -1 : 1) * (Number(pct[2]) / 100);
  if (shift < -1) throw new Error(`fault "${spec}": a signal cannot fall by more than 100%`);
  let selector: Selector;
  try {
    selector = parseSelector(m[3] === undefined ? '*' : m[3]);
  } catch (e) {
    throw new Error(`fault "${spec}": ${(e as Error).message}`);
  }
  return { spec, kind: 'shift', rate: 0, durationMs: 0, loss: 0, selector, shift: { name: m[1], shift } };
}

function parseRate(s: string, spec: string): number {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(s.trim());
  if (!m) throw new Error(`fault "${spec}": "${s}" is not a rate like 5% or 0.05`);
  const v = m[2] ? Number(m[1]) / 100 : Number(m[1]);
  if (!(v >= 0 && v <= 1)) throw new Error(`fault "${spec}": rate must be between 0 and 100%`);
  return v;
}

/** Parses one --fault SPEC; throws a one-line error naming the spec. */
export function parseFault(spec: string): Fault {
  if (spec.trim().startsWith('metric:')) return parseMetricFault(spec);
  if (spec.trim().startsWith('shift:')) return parseShiftFault(spec);
  const at = spec.indexOf('@');
  const head = at < 0 ? spec : spec.slice(0, at);
  const selector = parseSelector(at < 0 ? '*' : spec.slice(at + 1));
  const [kind, rateS, param] = head.split(':').map((p) => p.trim());
  if (!KINDS.has(kind))
    throw new Error(
      `fault "${spec}": unknown kind "${kind}" (crash, fail, slow, offline, flaky, never, metric, shift)`,
    );
  const k = kind as FaultKind;
  if (rateS === undefined && k !== 'crash') throw new Error(`fault "${spec}": give a rate, e.g. ${k}:5%`);
  const rate = rateS === undefined || rateS === '' ? 1 : parseRate(rateS, spec);
  let durationMs = 0;
  let loss = 0;
  if (k === 'slow') durationMs = param ? parseDuration(param) : 3_600_000;
  if (k === 'offline')
    durationMs = param && param !== 'forever' ? parseDuration(param) : Number.POSITIVE_INFINITY;
  if (k === 'flaky') loss = param ? parseRate(param, spec) : 0.5;
  if (param !== undefined && (k === 'crash' || k === 'fail' || k === 'never'))
    throw new Error(`fault "${spec}": ${k} takes no parameter after the rate`);
  return { spec, kind: k, rate, durationMs, loss, selector };
}

/** Bits of the per-device fault mask. */
export const F_CRASH = 1;
export const F_FAIL = 2;
export const F_SLOW = 4;
export const F_OFFLINE = 8;
export const F_FLAKY = 16;
export const F_NEVER = 32;
const BIT: Record<FaultKind, number> = {
  crash: F_CRASH,
  fail: F_FAIL,
  slow: F_SLOW,
  offline: F_OFFLINE,
  flaky: F_FLAKY,
  never: F_NEVER,
  metric: 0, // a metric fault hits no device
  shift: 0, // a shift moves a signal, not what the device does (signals.ts)
};

export interface FaultAssignment {
  mask: Uint8Array;
  slowMs: Float64Array; // extra report delay per device
  offlineUntilMs: Float64Array; // relative to the start of the rehearsal
  loss: Float32Array; // per check-in loss probability
  affected: Record<string, number>; // per fault spec: devices it hit
}

/** Decides, device by device and in a fixed order, which faults each device carries. */
export function assignFaults(fleet: SimFleet, faults: readonly Fault[], rng: Rng): FaultAssignment {
  const n = fleet.ids.length;
  const out: FaultAssignment = {
    mask: new Uint8Array(n),
    slowMs: new Float64Array(n),
    offlineUntilMs: new Float64Array(n),
    loss: new Float32Array(n),
    affected: {},
  };
  for (const f of faults) {
    // Metric and shift faults draw nothing: adding one keeps every device's faults as they were.
    if (f.kind === 'metric') continue;
    if (f.kind === 'shift') {
      // Every device of the selector: its signal moves once it runs the release (signals.ts).
      let hit = 0;
      for (let i = 0; i < n; i++) if (matches(f.selector, fleet.labels[i])) hit++;
      out.affected[f.spec] = hit;
      continue;
    }
    let hit = 0;
    for (let i = 0; i < n; i++) {
      if (!matches(f.selector, fleet.labels[i])) continue;
      if (f.rate < 1 && rng.next() >= f.rate) continue;
      hit++;
      out.mask[i] |= BIT[f.kind];
      if (f.kind === 'slow') out.slowMs[i] = Math.max(out.slowMs[i], f.durationMs);
      if (f.kind === 'offline') out.offlineUntilMs[i] = Math.max(out.offlineUntilMs[i], f.durationMs);
      if (f.kind === 'flaky') out.loss[i] = Math.max(out.loss[i], f.loss);
    }
    out.affected[f.spec] = hit;
  }
  return out;
}
