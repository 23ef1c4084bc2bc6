// Engine step benchmark: how long one step() takes for 10k, 100k and 1M devices, against a reference
// measured in the same run (a plain loop over the same device array reading one label), so the figures
// can be compared across machines. Usage: npx tsx bench/engine.ts [--rounds 5] [sizes...]; writes
// bench/results/engine.json. The step and the reference alternate in --rounds rounds (reference first, then
// steps first, …); each ratio is the median over the rounds of step / reference, given with its spread, so a
// neighbour's load on a shared machine does not fall on one side only.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AssignmentIndex } from '../src/engine/assignment-index.ts';
import { parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  type DeviceView,
  newRollout,
  type RolloutState,
  step,
} from '../src/engine/rollout.ts';
import { spread as spreadOf } from './stats.ts';

const plan = parsePlan(`
name: bench
report_deadline: 1h
waves:
  - { name: canary, select: "ring=canary", size: 1%, max_failures: 0 }
  - name: tier-C
    select: "tier=C, !canary"
    size: 50%
    order: [role=replica]
    max_concurrent: 5000
    max_concurrent_per: { label: cluster, max: 20 }
    max_failures: 1%
  - { name: rest, select: "tier in (A,B)", size: 100%, max_failures: 1% }
`);

function fleet(n: number): DeviceView[] {
  const out: DeviceView[] = new Array(n);
  for (let i = 0; i < n; i++)
    out[i] = {
      id: `dev-${i.toString(36).padStart(6, '0')}`,
      labels: {
        tier: 'ABC'[i % 3],
        role: i % 4 === 0 ? 'primary' : 'replica',
        cluster: `k${i % 500}`,
        ...(i % 50 === 0 ? { ring: 'canary' } : {}),
      },
      held: i % 997 === 0,
      pinned: false,
      busy: false,
      version: '1.0',
    };
  return out;
}

const { values: opts, positionals } = parseArgs({
  options: { rounds: { type: 'string', default: '5' } },
  allowPositionals: true,
});
const ROUNDS = Math.max(1, Number(opts.rounds));

/** Median, quartiles and range, to one decimal. */
const spread = (xs: number[]) => spreadOf(xs, 1);

function time(fn: () => void, reps: number, warm = true): number {
  if (warm) fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  return (performance.now() - t0) / reps;
}

interface Row {
  devices: number;
  startWaveMs: number; // step that selects, orders and queues a wave over the whole fleet
  steadyMs: number; // step in a running wave with every device assigned, given the kept index (incremental)
  steadyFreshMs: number; // the same with a new device array each step (as the server does)
  steadyFullMs: number; // the same without an index: the step builds it (the full recomputation)
  referenceMs: number; // plain loop over the same array
  startRatio: number; // median over the rounds of start-wave step / reference
  steadyRatio: number;
  startRatioSpread: ReturnType<typeof spread>;
  steadyRatioSpread: ReturnType<typeof spread>;
  rounds: Array<{
    referenceMs: number;
    startWaveMs: number;
    steadyMs: number;
    steadyFreshMs: number;
    steadyFullMs: number;
  }>;
}

function bench(n: number): Row {
  const devices = fleet(n);
  // Repetitions per round: about the same total as one long measurement of each (at least one per round).
  const reps = Math.max(1, Math.round((n >= 1_000_000 ? 2 : n >= 100_000 ? 4 : 20) / ROUNDS));
  let sink = 0;
  const reference = () => {
    let c = 0;
    for (const d of devices) if (d.labels.tier === 'C' && !d.held) c++;
    sink += c;
  };
  // Step 1 → canary wave; report all → tier-C wave starts (selection over the fleet).
  const rollout0: RolloutState = newRollout({
    id: 'b',
    component: 'c',
    version: '2',
    releaseCreatedAt: 0,
    now: 0,
  });
  const asgStart = new Map<string, Assignment>();
  let out = step({ plan, rollout: rollout0, assignments: asgStart, devices, now: 0 });
  for (const a of out.changed) asgStart.set(a.deviceId, { ...a, state: 'succeeded', reportedAt: 1 });
  const before = out.rollout;
  const startWave = () => {
    out = step({ plan, rollout: before, assignments: asgStart, devices, now: 1000 });
  };
  startWave();
  const rollout = out.rollout;
  const asg = new Map(asgStart);
  for (const a of out.changed) asg.set(a.deviceId, a);
  // Steady state: fake every remaining device as assigned to the current wave, half of them reported.
  let i = 0;
  for (const d of devices)
    if (!asg.has(d.id))
      asg.set(d.id, {
        deviceId: d.id,
        wave: rollout.wave,
        state: i++ % 2 ? 'succeeded' : 'queued',
        fromVersion: '1.0',
        offeredAt: null,
        reportedAt: null,
        reason: null,
      });
  // The caller's index, kept beside the assignments (built once here; kept by note() across steps).
  const index = AssignmentIndex.of(asg.values());
  const steady = () => {
    sink += step({ plan, rollout, assignments: asg, index, devices, now: 2000 }).commands.length;
  };
  // A fresh device array per step (as the server builds one) pays for the id index when it looks devices up.
  const steadyFresh = () => {
    sink += step({ plan, rollout, assignments: asg, index, devices: devices.slice(), now: 2000 }).commands
      .length;
  };
  const steadyFull = () => {
    sink += step({ plan, rollout, assignments: asg, devices, now: 2000 }).commands.length;
  };
  const rounds: Row['rounds'] = [];
  // Round -1 is a warm-up (JIT tiers, caches), not kept: its figures ran 1.5–3× the later ones.
  for (let k = -1; k < ROUNDS; k++) {
    const warm = k === -1;
    // The reference loop is cheap: more repetitions of it, for a stable figure.
    const ref = () => time(reference, reps * 10, warm);
    const steps = () => ({
      startWaveMs: time(startWave, reps, warm),
      steadyMs: time(steady, reps, warm),
      steadyFreshMs: time(steadyFresh, reps, warm),
      steadyFullMs: time(steadyFull, reps, warm),
    });
    if (k % 2 === 0) {
      const referenceMs = ref();
      const s = steps();
      if (k >= 0) rounds.push({ referenceMs, ...s });
    } else {
      const s = steps();
      const referenceMs = ref();
      if (k >= 0) rounds.push({ referenceMs, ...s });
    }
  }
  if (sink < 0) console.log(sink);
  const med = (f: (r: Row['rounds'][number]) => number) => spread(rounds.map(f)).median;
  const startRatioSpread = spread(rounds.map((r) => r.startWaveMs / r.referenceMs));
  const steadyRatioSpread = spread(rounds.map((r) => r.steadyMs / r.referenceMs));
  const ms = (x: number, d: number) => +x.toFixed(d);
  return {
    devices: n,
    // Medians over the rounds.
    startWaveMs: ms(spread(rounds.map((r) => r.startWaveMs * 100)).median / 100, 2),
    steadyMs: ms(spread(rounds.map((r) => r.steadyMs * 100)).median / 100, 2),
    steadyFreshMs: ms(spread(rounds.map((r) => r.steadyFreshMs * 100)).median / 100, 2),
    steadyFullMs: ms(spread(rounds.map((r) => r.steadyFullMs * 100)).median / 100, 2),
    referenceMs: ms(med((r) => r.referenceMs * 1000) / 1000, 3),
    startRatio: startRatioSpread.median,
    steadyRatio: steadyRatioSpread.median,
    startRatioSpread,
    steadyRatioSpread,
    rounds: rounds.map((r) => ({
      referenceMs: ms(r.referenceMs, 3),
      startWaveMs: ms(r.startWaveMs, 2),
      steadyMs: ms(r.steadyMs, 2),
      steadyFreshMs: ms(r.steadyFreshMs, 2),
      steadyFullMs: ms(r.steadyFullMs, 2),
    })),
  };
}

const sizes = positionals.map(Number).filter((n) => n > 0);
const rows: Row[] = [];
for (const n of sizes.length ? sizes : [10_000, 100_000, 1_000_000]) {
  const r = bench(n);
  rows.push(r);
  console.log(
    `${String(n).padStart(9)} devices: wave start ${r.startWaveMs} ms, steady step ${r.steadyMs} ms (fresh array ${r.steadyFreshMs} ms, no index ${r.steadyFullMs} ms), ` +
      `plain loop ${r.referenceMs} ms (medians of ${ROUNDS} alternating rounds); ratio start / steady: ×${r.startRatio} ` +
      `(${r.startRatioSpread.min}–${r.startRatioSpread.max}, IQR ${r.startRatioSpread.q1}–${r.startRatioSpread.q3}) / ` +
      `×${r.steadyRatio} (${r.steadyRatioSpread.min}–${r.steadyRatioSpread.max}, IQR ${r.steadyRatioSpread.q1}–${r.steadyRatioSpread.q3})`,
  );
}
const file = join(dirname(fileURLToPath(import.meta.url)), 'results', 'engine.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  `${JSON.stringify({ node: process.version, at: new Date().toISOString(), rounds: ROUNDS, rows }, null, 2)}\n`,
);
console.log(`written ${file}`);
