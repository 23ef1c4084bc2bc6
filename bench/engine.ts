// Engine step benchmark: how long one step() takes for 10k, 100k and 1M devices, against a reference
// measured in the same run (a plain loop over the same device array reading one label), so the figures
// can be compared across machines. Usage: npx tsx bench/engine.ts [sizes...]; writes bench/results/engine.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  type DeviceView,
  newRollout,
  type RolloutState,
  step,
} from '../src/engine/rollout.ts';

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

function time(fn: () => void, reps: number): number {
  fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  return (performance.now() - t0) / reps;
}

interface Row {
  devices: number;
  startWaveMs: number; // step that selects, orders and queues a wave over the whole fleet
  steadyMs: number; // step in a running wave with every device assigned: deadlines, gates, offers
  steadyFreshMs: number; // the same with a new device array each step (as the server does)
  referenceMs: number; // plain loop over the same array
  startRatio: number;
  steadyRatio: number;
}

function bench(n: number): Row {
  const devices = fleet(n);
  const reps = n >= 1_000_000 ? 2 : n >= 100_000 ? 4 : 20;
  let sink = 0;
  const referenceMs = time(() => {
    let c = 0;
    for (const d of devices) if (d.labels.tier === 'C' && !d.held) c++;
    sink += c;
  }, reps);
  // Step 1 → canary wave; report all → tier-C wave starts (selection over the fleet).
  let rollout: RolloutState = newRollout({
    id: 'b',
    component: 'c',
    version: '2',
    releaseCreatedAt: 0,
    now: 0,
  });
  const asg = new Map<string, Assignment>();
  let out = step({ plan, rollout, assignments: asg, devices, now: 0 });
  for (const a of out.changed) asg.set(a.deviceId, { ...a, state: 'succeeded', reportedAt: 1 });
  rollout = out.rollout;
  const before = rollout;
  const startWaveMs = time(() => {
    out = step({ plan, rollout: before, assignments: asg, devices, now: 1000 });
  }, reps);
  rollout = out.rollout;
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
  const steadyMs = time(() => {
    sink += step({ plan, rollout, assignments: asg, devices, now: 2000 }).commands.length;
  }, reps);
  // The server builds a fresh device array per step, so it pays for the id index every time.
  const steadyFreshMs = time(() => {
    sink += step({ plan, rollout, assignments: asg, devices: devices.slice(), now: 2000 }).commands.length;
  }, reps);
  if (sink < 0) console.log(sink);
  return {
    devices: n,
    startWaveMs: +startWaveMs.toFixed(2),
    steadyMs: +steadyMs.toFixed(2),
    steadyFreshMs: +steadyFreshMs.toFixed(2),
    referenceMs: +referenceMs.toFixed(3),
    startRatio: +(startWaveMs / referenceMs).toFixed(1),
    steadyRatio: +(steadyMs / referenceMs).toFixed(1),
  };
}

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const rows: Row[] = [];
for (const n of sizes.length ? sizes : [10_000, 100_000, 1_000_000]) {
  const r = bench(n);
  rows.push(r);
  console.log(
    `${String(n).padStart(9)} devices: wave start ${r.startWaveMs} ms, steady step ${r.steadyMs} ms (fresh array ${r.steadyFreshMs} ms), ` +
      `plain loop ${r.referenceMs} ms (×${r.startRatio} / ×${r.steadyRatio})`,
  );
}
const file = join(dirname(fileURLToPath(import.meta.url)), 'results', 'engine.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(
  file,
  `${JSON.stringify({ node: process.version, at: new Date().toISOString(), rows }, null, 2)}\n`,
);
console.log(`written ${file}`);
