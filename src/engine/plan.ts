// Rollout plans as code: YAML validated with zod; every error names the file, line and field.
import { z } from 'zod';
import { parseValidatedYaml } from '../config/validated-yaml.ts';
import { parseDuration } from './duration.ts';
import { parseSelector } from './selector.ts';

/** An amount that is either an absolute count or a percentage of a base. */
export type Amount = { count: number } | { percent: number };

export interface WindowSpec {
  cron: string; // five-field cron: minute hour day-of-month month day-of-week
  durationMs: number;
  timezone: string; // IANA zone, DST-aware
}

export interface WaveSpec {
  name: string;
  select: string; // selector source, parsed on use
  size: Amount; // of the matching devices not yet exposed
  bakeMs: number;
  maxFailures: Amount; // halt when failures *exceed* this
  minSuccessPercent: number; // gate: succeeded / selected
  minReported?: Amount; // gate: devices that really reported (not timed out); fewer = inconclusive, halt
  approval: boolean;
  maxConcurrent: number | null;
  maxConcurrentPer: { label: string; max: number } | null;
  order: string[]; // selectors: devices matching an earlier one go first
  window: WindowSpec | null;
  reportDeadlineMs: number;
  /** Metric gates checked during the wave and its bake (absent on plans stored before them: none). */
  metrics?: MetricGateSpec[];
  /** The evidence gate: device signals compared between treatment and control during the bake (absent: none). */
  compare?: CompareSpec | null;
}

/** One device signal an evidence gate judges (docs/evidence-gates.md). */
export interface SignalGateSpec {
  name: string;
  /** Which way is harm: `higher` for restarts, errors, latency; `lower` for throughput. */
  bad: 'higher' | 'lower';
  /** The smallest shift that matters, as a Cliff's delta in [0, 1). */
  tolerance: number;
  /** A failing critical signal halts the rollout; a failing non-critical one counts as marginal. */
  critical: boolean;
}

/**
 * A wave's evidence gate: during the bake, each signal on the wave's updated devices (treatment) is compared with
 * the devices of the same selector still on the previous release (control). `confidence` holds for the wave's
 * verdict as a whole: each test runs at α / (looks × signals), looks counting the extension's.
 */
export interface CompareSpec {
  confidence: number;
  minSamples: number;
  /** Evaluations spread evenly over the bake; the last at its end (an extension adds one at the new end). */
  looks: number;
  onFail: 'halt' | 'halt-and-rollback';
  onMarginal: 'extend' | 'approval';
  /** How long a marginal verdict at the end of the bake extends it (once); then it asks for approval. */
  extendMs: number;
  signals: SignalGateSpec[];
}

/**
 * A metric gate: a Prometheus instant query whose value must satisfy `value <comparison> threshold` (the
 * condition that must HOLD); evaluated every `intervalMs` while the wave runs and bakes.
 */
export interface MetricGateSpec {
  name: string;
  query: string;
  comparison: '<' | '<=' | '>' | '>=';
  threshold: number;
  intervalMs: number;
  onBreach: 'halt' | 'halt-and-rollback';
}

/** Bounds of a wave's metric gates (a plan is operator input; the evaluator queries each one periodically). */
export const METRIC_GATES_MAX = 10;
export const METRIC_QUERY_MAX = 2000;
export const METRIC_INTERVAL_MIN_MS = 5000;
/** Bounds of an evidence gate (the agent reports at most 16 signals per component). */
export const COMPARE_SIGNALS_MAX = 16;
export const COMPARE_LOOKS_MAX = 24;

export interface Plan {
  name: string;
  description: string;
  onFailure: 'halt' | 'halt-and-rollback';
  emergencyBakeFactor: number;
  releaseAgeMs: number;
  firstWaveCapPercent: number;
  /** Windows chosen by a device label (e.g. `maintenance: berlin-night`); they override wave and plan windows. */
  deviceWindows?: { label: string; windows: Record<string, WindowSpec> } | null;
  /**
   * Four eyes on approval waves (absent: on): false lets the operator who started a rollout of this plan approve
   * its waves too. The server-wide `governance.four_eyes: false` turns it off for every plan.
   */
  fourEyes?: boolean;
  waves: WaveSpec[];
}

const durationField = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const amountField = (what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx): Amount => {
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || v < 0) {
        ctx.addIssue({
          code: 'custom',
          message: `${what} must be a whole number ≥ 0 or a percentage like "10%"`,
        });
        return z.NEVER;
      }
      return { count: v };
    }
    const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v);
    if (m && Number(m[1]) <= 100) return { percent: Number(m[1]) };
    if (/^\s*\d+\s*$/.test(v)) return { count: Number(v) };
    ctx.addIssue({
      code: 'custom',
      message: `${what} must be a whole number or a percentage like "10%", got "${v}"`,
    });
    return z.NEVER;
  });

const percentField = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : Number(/^\s*(\d+(?:\.\d+)?)\s*%?\s*$/.exec(v)?.[1] ?? Number.NaN);
  if (!(n >= 0 && n <= 100)) {
    ctx.addIssue({ code: 'custom', message: `must be a percentage between 0 and 100, got "${v}"` });
    return z.NEVER;
  }
  return n;
});

const selectorField = z.string().superRefine((v, ctx) => {
  try {
    parseSelector(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

const windowField = z
  .object({
    cron: z.string().refine((c) => c.trim().split(/\s+/).length === 5, 'cron must have five fields'),
    duration: durationField,
    timezone: z.string().refine((tz) => {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: tz });
        return true;
      } catch {
        return false;
      }
    }, 'unknown IANA timezone'),
  })
  .strict()
  .transform((w): WindowSpec => ({ cron: w.cron.trim(), durationMs: w.duration, timezone: w.timezone }));

const metricGateSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'metric gate names use letters, digits, _ . -'),
    query: z.string().trim().min(1, 'a query is required').max(METRIC_QUERY_MAX),
    comparison: z.enum(['<', '<=', '>', '>=']),
    threshold: z.number().finite(),
    interval: durationField
      .default(30_000)
      .refine((ms) => ms >= METRIC_INTERVAL_MIN_MS, 'interval must be at least 5s'),
    on_breach: z.enum(['halt', 'halt-and-rollback']).optional(),
  })
  .strict();

const signalGateSchema = z
  .object({
    name: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,63}$/, 'signal names use a-z, 0-9 and _ (as devices report them)'),
    bad: z.enum(['higher', 'lower']).default('higher'),
    // 0: any significant harm fails. Rare event counts have small Cliff's deltas even when doubled
    // (docs/performance.md, "Evidence gates"), so a tolerance is for continuous signals such as latency.
    tolerance: z.number().min(0).lt(1, "tolerance is a Cliff's delta below 1").default(0),
    critical: z.boolean().default(false),
  })
  .strict();

const compareSchema = z
  .object({
    confidence: z.number().gt(0.5).lt(1, 'confidence must be below 1, e.g. 0.98').default(0.98),
    min_samples: z.number().int().min(5, 'min_samples must be at least 5 per cohort').default(30),
    looks: z.number().int().min(1).max(COMPARE_LOOKS_MAX).default(1),
    on_fail: z.enum(['halt', 'halt-and-rollback']).optional(),
    on_marginal: z.enum(['extend', 'approval']).default('extend'),
    extend: durationField.optional(),
    signals: z
      .array(signalGateSchema)
      .min(1, 'an evidence gate needs at least one signal')
      .max(COMPARE_SIGNALS_MAX, `at most ${COMPARE_SIGNALS_MAX} signals per wave`),
  })
  .strict()
  .superRefine((c, ctx) => {
    // A gate that cannot fail is worse than none: with min_samples devices per cohort, the most extreme outcome
    // (every treatment value above every control value) must reach each test's α (evidence.ts testAlpha).
    const alpha = (1 - c.confidence) / ((c.looks + (c.on_marginal === 'extend' ? 1 : 0)) * c.signals.length);
    const smallestP = 1 / centralBinomial(c.min_samples);
    if (c.signals.length > 0 && smallestP >= alpha)
      ctx.addIssue({
        code: 'custom',
        path: ['min_samples'],
        message: `min_samples ${c.min_samples} can never reach the α of each test (${alpha.toPrecision(3)} = (1 − confidence) / (looks × signals)): raise min_samples, or use fewer looks or signals`,
      });
    const seen = new Set<string>();
    c.signals.forEach((g, i) => {
      if (seen.has(g.name))
        ctx.addIssue({
          code: 'custom',
          path: ['signals', i, 'name'],
          message: `duplicate signal "${g.name}"`,
        });
      seen.add(g.name);
    });
  });

/** C(2n, n): the number of ways to split 2n distinct values into two cohorts of n (exact p's denominator). */
function centralBinomial(n: number): number {
  let c = 1;
  for (let k = 1; k <= n; k++) c = (c * (n + k)) / k;
  return c;
}

const waveSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'wave names use letters, digits, _ . -'),
    select: selectorField.default('*'),
    size: amountField('size'),
    bake: durationField.default(0),
    max_failures: amountField('max_failures').default({ count: 0 }),
    min_success: percentField.default(0),
    min_reported: amountField('min_reported').default({ count: 0 }),
    approval: z.boolean().default(false),
    max_concurrent: z.number().int().positive().nullable().default(null),
    max_concurrent_per: z
      .object({ label: z.string().min(1), max: z.number().int().positive() })
      .strict()
      .nullable()
      .default(null),
    order: z.array(selectorField).default([]),
    window: windowField.nullable().default(null),
    report_deadline: durationField.optional(),
    metrics: z
      .array(metricGateSchema)
      .max(METRIC_GATES_MAX, `at most ${METRIC_GATES_MAX} metric gates per wave`)
      .default([]),
    compare: compareSchema.nullable().default(null),
  })
  .strict()
  .superRefine((w, ctx) => {
    if (w.compare && w.bake <= 0)
      ctx.addIssue({
        code: 'custom',
        path: ['compare'],
        message: 'an evidence gate judges during the bake: give the wave a bake',
      });
    if (w.compare && 'percent' in w.size && w.size.percent >= 100)
      ctx.addIssue({
        code: 'custom',
        path: ['compare'],
        message:
          'a wave of size 100% leaves no device of its selector on the previous release to compare with',
      });
    const seen = new Set<string>();
    w.metrics.forEach((m, i) => {
      if (seen.has(m.name))
        ctx.addIssue({
          code: 'custom',
          path: ['metrics', i, 'name'],
          message: `duplicate metric gate name "${m.name}"`,
        });
      seen.add(m.name);
    });
  });

const planSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'plan names use letters, digits, _ . -'),
    description: z.string().default(''),
    on_failure: z.enum(['halt', 'halt-and-rollback']).default('halt'),
    // zod 4 returns a default as the output as is, so defaults of transformed fields are in milliseconds.
    report_deadline: durationField.default(15 * 60 * 1000),
    release_age: durationField.default(0),
    first_wave_cap: percentField.default(5),
    window: windowField.nullable().default(null),
    device_windows: z
      .object({ label: z.string().min(1), windows: z.record(z.string(), windowField) })
      .strict()
      .nullable()
      .default(null),
    emergency: z
      .object({ bake_factor: z.number().positive().max(1) })
      .strict()
      .default({ bake_factor: 0.1 }),
    four_eyes: z.boolean().default(true),
    waves: z.array(waveSchema).min(1, 'a plan needs at least one wave'),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.waves.forEach((w, i) => {
      if (seen.has(w.name))
        ctx.addIssue({
          code: 'custom',
          path: ['waves', i, 'name'],
          message: `duplicate wave name "${w.name}"`,
        });
      seen.add(w.name);
    });
  });

export class PlanError extends Error {}

/** Parses and validates plan YAML; throws PlanError "FILE:LINE: field: message" on the first problem. */
export function parsePlan(source: string, file = 'plan.yaml'): Plan {
  const p = parseValidatedYaml(planSchema, source, file, PlanError);
  return {
    name: p.name,
    description: p.description,
    onFailure: p.on_failure,
    emergencyBakeFactor: p.emergency.bake_factor,
    releaseAgeMs: p.release_age,
    firstWaveCapPercent: p.first_wave_cap,
    deviceWindows: p.device_windows,
    fourEyes: p.four_eyes,
    waves: p.waves.map((w) => ({
      name: w.name,
      select: w.select,
      size: w.size,
      bakeMs: w.bake,
      maxFailures: w.max_failures,
      minSuccessPercent: w.min_success,
      minReported: w.min_reported,
      approval: w.approval,
      maxConcurrent: w.max_concurrent,
      maxConcurrentPer: w.max_concurrent_per,
      order: w.order,
      window: w.window ?? p.window,
      reportDeadlineMs: w.report_deadline ?? p.report_deadline,
      metrics: w.metrics.map((m) => ({
        name: m.name,
        query: m.query,
        comparison: m.comparison,
        threshold: m.threshold,
        intervalMs: m.interval,
        onBreach: m.on_breach ?? p.on_failure,
      })),
      compare: w.compare && {
        confidence: w.compare.confidence,
        minSamples: w.compare.min_samples,
        looks: w.compare.looks,
        onFail: w.compare.on_fail ?? p.on_failure,
        onMarginal: w.compare.on_marginal,
        extendMs: w.compare.extend ?? w.bake,
        signals: w.compare.signals.map((g) => ({
          name: g.name,
          bad: g.bad,
          tolerance: g.tolerance,
          critical: g.critical,
        })),
      },
    })),
  };
}

/** Resolves an amount against a base: percentages round up, so a non-empty base never yields zero. */
export function resolveAmount(a: Amount, base: number): number {
  if ('count' in a) return a.count;
  return Math.ceil((a.percent * base) / 100 - 1e-9);
}
