// `npm run bench:evidence` (and `npm run bench -- --only evidence`): detection power of the evidence gate
// (issue 16) against a failure budget on the same simulated fleet. The question: for a release that raises a
// per-device event rate (1 → 3 %, 1 → 2 %, 1 → 1.5 % per hour) or shifts a latency by +10 %, how many exposed
// devices and how much bake does the comparison gate need to halt at confidence 0.98, in ≥ 90 % of seeded runs?
// The reference measured in the same run is the failure budget, on the very same devices.
//
// Model (also in docs/performance.md, "Evidence gates: detection power"):
// - Treatment: N exposed devices. Control: the rest of the wave's selector population, still on the previous
//   release, of N or 4N devices. Both are observed over the same bake of H hours.
// - Event signals: each device's count over the bake ~ Poisson(rate × H); control rate 1 %/h, treatment the
//   effect's rate.
// - Latency signal: device d reports exp(μ + σ_b·Z_d + σ_w·Z̄_H) × (1 + shift): a lasting per-device level
//   (σ_b = 0.3) plus hourly measurement noise (σ_w = 0.5 per hourly sample) averaged, in logs, over H samples.
// - The gate: cohorts built directly (assembleCohorts only picks devices; nothing to measure there), then
//   judgeEvidence — the server's function — with one critical signal, confidence 0.98, looks 1, min_samples 20,
//   on_marginal extend (the plan default: testAlpha counts the extension's look, so each test runs at α = 0.01),
//   tolerance 0.0 and 0.1 (Cliff's delta). Detected = verdict `fail` (the gate halts).
// - The failure budget: an event fails a device's health only inside its probation (10 min after install), so
//   the budget sees Binomial(N, 1 − exp(−rate × 10 min)) failures, whatever the bake; max_failures 1 % of the
//   wave, halting when failures exceed it (gates.ts). A latency shift fails no health check: it never sees it.
// Options: --runs 200 (seeded runs per cell), --seed evidence, --sizes 50,100,200,500,1000,2000, --bakes 1,4,12,24.
// Writes bench/results/evidence-power.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { emptyTally } from '../src/engine/assignment-index.ts';
import { type Cohorts, judgeEvidence, testAlpha } from '../src/engine/evidence.ts';
import { overFailureBudget } from '../src/engine/gates.ts';
import { type CompareSpec, parsePlan } from '../src/engine/plan.ts';
import { createRng, type Rng } from '../src/sim/prng.ts';
import { poisson } from '../src/sim/signals.ts';
import { round } from './stats.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '200' },
    seed: { type: 'string', default: 'evidence' },
    sizes: { type: 'string', default: '50,100,200,500,1000,2000' },
    bakes: { type: 'string', default: '1,4,12,24' },
  },
});
const RUNS = Math.max(10, Number(values.runs));
const SIZES = values.sizes!.split(',').map(Number);
const BAKES = values.bakes!.split(',').map(Number);
const say = (s: string) => process.stdout.write(`${s}\n`);

const BASE_RATE = 0.01; // events per device-hour on the previous release
const PROBATION_H = 10 / 60;
const MAX_FAILURES_PERCENT = 1;
const LATENCY = { mu: Math.log(2), between: 0.3, within: 0.5 };
const CONTROL_FACTORS = [1, 4];
const TOLERANCES = [0, 0.1];
const CONFIDENCE = 0.98;

interface Effect {
  name: string;
  kind: 'events' | 'latency';
  /** Events: the treatment's rate per hour. Latency: the relative shift. */
  value: number;
}
const NULL_EVENTS: Effect = { name: 'none (events 1 → 1 %/h)', kind: 'events', value: BASE_RATE };
const NULL_LATENCY: Effect = { name: 'none (latency +0 %)', kind: 'latency', value: 0 };
const EFFECTS: Effect[] = [
  { name: 'events 1 → 3 %/h', kind: 'events', value: 0.03 },
  { name: 'events 1 → 2 %/h', kind: 'events', value: 0.02 },
  { name: 'events 1 → 1.5 %/h', kind: 'events', value: 0.015 },
  { name: 'latency +10 %', kind: 'latency', value: 0.1 },
];

function gateSpec(tolerance: number): CompareSpec {
  return {
    confidence: CONFIDENCE,
    minSamples: 20,
    looks: 1,
    onFail: 'halt',
    onMarginal: 'extend',
    extendMs: 3_600_000,
    signals: [{ name: 'signal', bad: 'higher', tolerance, critical: true }],
  };
}
const SPECS = TOLERANCES.map(gateSpec);

function normal(rng: Rng): number {
  const u = 1 - rng.next(); // (0, 1]: log is finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

function binomial(rng: Rng, n: number, p: number): number {
  let k = 0;
  for (let i = 0; i < n; i++) if (rng.next() < p) k++;
  return k;
}

/** One device's signal over a bake of `hours`. */
function deviceValue(rng: Rng, e: Effect, hours: number, exposed: boolean): number {
  if (e.kind === 'events') return poisson(rng, (exposed ? e.value : BASE_RATE) * hours);
  const level =
    LATENCY.mu + LATENCY.between * normal(rng) + (LATENCY.within / Math.sqrt(hours)) * normal(rng);
  return Math.exp(level) * (exposed ? 1 + e.value : 1);
}

// The budget as the engine judges it (gates.ts), on a wave of N devices with max_failures 1 %.
const budgetWaves = parsePlan(`
name: bench-evidence
waves:
  - { name: wave, select: "*", size: 50%, max_failures: ${MAX_FAILURES_PERCENT}% }
`).waves;

/** Whether the failure budget halts the wave: failures exceed max_failures % of its N devices. */
function budgetHalts(rng: Rng, e: Effect, n: number): boolean {
  if (e.kind === 'latency') return false; // a slower device passes its health checks
  const failed = binomial(rng, n, 1 - Math.exp(-e.value * PROBATION_H));
  const tally = { ...emptyTally(), succeeded: n - failed, failed };
  return overFailureBudget(budgetWaves, 0, () => tally) !== null;
}

interface Cell {
  effect: string;
  devices: number;
  bake_h: number;
  device_hours: number;
  /** Detection % of the gate, per configuration `tol<t>/control<k>N`. */
  gate: Record<string, number>;
  budget: number;
}
const configKey = (tol: number, factor: number) => `tol ${tol}, control ${factor}N`;
const CONFIGS = TOLERANCES.flatMap((t) => CONTROL_FACTORS.map((f) => ({ t, f, key: configKey(t, f) })));

let judged = 0;
let judgeMs = 0;
function cell(e: Effect, n: number, hours: number): Cell {
  const rng = createRng(`${values.seed}:${e.name}:${n}:${hours}`);
  const hits = new Map<string, number>(CONFIGS.map((c) => [c.key, 0]));
  let budget = 0;
  const maxControl = n * Math.max(...CONTROL_FACTORS);
  for (let r = 0; r < RUNS; r++) {
    const treatment = Array.from({ length: n }, () => deviceValue(rng, e, hours, true));
    // The larger control contains the smaller: one population, seen through two selector sizes.
    const control = Array.from({ length: maxControl }, () => deviceValue(rng, e, hours, false));
    for (const f of CONTROL_FACTORS) {
      const cohorts = new Map<string, Cohorts>([
        ['signal', { treatment, control: f * n === maxControl ? control : control.slice(0, f * n) }],
      ]);
      for (const [i, spec] of SPECS.entries()) {
        const t0 = performance.now();
        const v = judgeEvidence(spec, cohorts);
        judgeMs += performance.now() - t0;
        judged++;
        if (v.verdict === 'fail') {
          const key = configKey(TOLERANCES[i], f);
          hits.set(key, (hits.get(key) ?? 0) + 1);
        }
      }
    }
    if (budgetHalts(rng, e, n)) budget++;
  }
  const pct = (k: number) => round((k * 100) / RUNS, 1);
  return {
    effect: e.name,
    devices: n,
    bake_h: hours,
    device_hours: n * hours,
    gate: Object.fromEntries([...hits].map(([k, v]) => [k, pct(v)])),
    budget: pct(budget),
  };
}

const started = performance.now();
say(
  `evidence gate detection power: ${RUNS} seeded runs per cell, confidence ${CONFIDENCE} (per-test α ${round(testAlpha(SPECS[0]), 4)}), ` +
    `min_samples 20, one critical signal; ${cpus().length} × ${cpus()[0]?.model}, ${process.version}`,
);

// False positives first: the same release on both sides, events and latency, every size and bake.
const nullCells: Cell[] = [];
for (const e of [NULL_EVENTS, NULL_LATENCY])
  for (const n of SIZES) for (const h of BAKES) nullCells.push(cell(e, n, h));
const falsePositive = Object.fromEntries(
  CONFIGS.map((c) => {
    const runs = nullCells.length * RUNS;
    const fails = nullCells.reduce((s, x) => s + (x.gate[c.key] * RUNS) / 100, 0);
    return [
      c.key,
      {
        percent: round((fails * 100) / runs, 2),
        runs,
        worst_cell: Math.max(...nullCells.map((x) => x.gate[c.key])),
      },
    ];
  }),
);
const budgetFalsePositive = {
  percent: round(nullCells.reduce((s, x) => s + x.budget, 0) / nullCells.length, 2),
  worst_cell: Math.max(...nullCells.map((x) => x.budget)),
};
say(
  `\nno effect (${nullCells.length} cells × ${RUNS} runs): false-positive rate, allowed ${round((1 - CONFIDENCE) * 100)} %`,
);
for (const c of CONFIGS) {
  const f = falsePositive[c.key];
  const ok = f.percent <= (1 - CONFIDENCE) * 100 ? 'within' : 'ABOVE';
  say(`  gate ${c.key.padEnd(22)} ${f.percent} % (worst cell ${f.worst_cell} %): ${ok} 1 − confidence`);
}
say(
  `  failure budget           ${budgetFalsePositive.percent} % (worst cell ${budgetFalsePositive.worst_cell} %: small waves, where one failure is over 1 %)`,
);

const cells: Cell[] = [];
const fewestByBake: Record<string, Record<string, Record<string, number | null>>> = {};
const smallest: Record<
  string,
  Record<string, { devices: number; bake_h: number; device_hours: number } | null>
> = {};
for (const e of EFFECTS) {
  say(`\n${e.name}: detection % — gate (${CONFIGS.map((c) => c.key).join(' | ')}) ; failure budget`);
  const mine: Cell[] = [];
  for (const n of SIZES)
    for (const h of BAKES) {
      const c = cell(e, n, h);
      mine.push(c);
      say(
        `  N ${String(n).padStart(4)} × ${String(h).padStart(2)} h: ${CONFIGS.map((k) => String(c.gate[k.key]).padStart(5)).join(' |')} ; ${String(c.budget).padStart(5)}`,
      );
    }
  cells.push(...mine);
  // The least exposure (device-hours, then the shorter bake) that detects in ≥ 90 % of runs.
  const least = (hit: (c: Cell) => number) => {
    const ok = mine.filter((c) => hit(c) >= 90);
    ok.sort((a, b) => a.device_hours - b.device_hours || a.bake_h - b.bake_h);
    return ok[0] ? { devices: ok[0].devices, bake_h: ok[0].bake_h, device_hours: ok[0].device_hours } : null;
  };
  // Per bake, the fewest exposed devices that detect in ≥ 90 % of runs (the default configuration and the budget).
  const fewest = (hit: (c: Cell) => number) =>
    Object.fromEntries(
      BAKES.map((h) => [`${h} h`, mine.find((c) => c.bake_h === h && hit(c) >= 90)?.devices ?? null]),
    );
  fewestByBake[e.name] = Object.fromEntries([
    ...CONFIGS.map((k) => [`gate ${k.key}`, fewest((c) => c.gate[k.key])]),
    ['failure budget', fewest((c) => c.budget)],
  ]);
  smallest[e.name] = Object.fromEntries([
    ...CONFIGS.map((k) => [`gate ${k.key}`, least((c) => c.gate[k.key])]),
    ['failure budget', least((c) => c.budget)],
  ]);
  for (const [who, s] of Object.entries(smallest[e.name]))
    say(
      `  smallest for ≥ 90 %, ${who.padEnd(27)}: ${s ? `N ${s.devices} × ${s.bake_h} h (${s.device_hours} device-hours)` : 'not within the grid'}`,
    );
  for (const [who, f] of Object.entries(fewestByBake[e.name]))
    say(
      `  fewest devices for ≥ 90 %, ${who.padEnd(27)}: ${Object.entries(f)
        .map(([h, n]) => `${h} ${n ?? `>${SIZES[SIZES.length - 1]}`}`)
        .join(', ')}`,
    );
}

const wall = (performance.now() - started) / 1000;
say(
  `\n${judged} judgeEvidence calls, ${round((judgeMs * 1000) / judged, 1)} µs each on average; ${round(wall, 1)} s wall`,
);
const file = join(dirname(fileURLToPath(import.meta.url)), 'results', 'evidence-power.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  `${JSON.stringify(
    {
      at: new Date().toISOString(),
      machine: { node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model },
      runs_per_cell: RUNS,
      seed: values.seed,
      model: {
        base_rate_per_hour: BASE_RATE,
        probation_minutes: PROBATION_H * 60,
        max_failures_percent: MAX_FAILURES_PERCENT,
        latency: LATENCY,
        gate: {
          confidence: CONFIDENCE,
          min_samples: 20,
          looks: 1,
          on_marginal: 'extend',
          per_test_alpha: testAlpha(SPECS[0]),
        },
      },
      false_positive: { gate: falsePositive, budget: budgetFalsePositive },
      smallest_for_90_percent: smallest,
      fewest_devices_for_90_percent_by_bake: fewestByBake,
      cells,
      null_cells: nullCells,
      wall_s: round(wall, 1),
    },
    null,
    2,
  )}\n`,
);
say(`written ${file}`);
