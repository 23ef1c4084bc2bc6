// Metric gates in rehearsal: a metric fault moves the simulated metric a gate reads; the report shows when and
// why the gate fired. Also the `ringfence rehearse` command line with such a fault.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parsePlan } from '../src/engine/plan.ts';
import { parseFault } from '../src/sim/faults.ts';
import { generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { type RehearsalResult, rehearse } from '../src/sim/rehearsal.ts';
import { guardProcesses } from './helpers/processes.ts';

const run = promisify(execFile);
const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;

const PLAN = `
name: gated
on_failure: halt-and-rollback
report_deadline: 1h
waves:
  - name: first
    select: "env in (dev,staging)"
    size: 100%
    bake: 1h
    metrics:
      - { name: error_ratio, query: 'job:errors:ratio5m', comparison: '<', threshold: 0.05, interval: 1m }
  - name: second
    select: env=prod
    size: 50%
    bake: 1h
    metrics:
      - { name: error_ratio, query: 'job:errors:ratio5m', comparison: '<', threshold: 0.05, interval: 1m }
  - { name: rest, select: env=prod, size: 100% }
`;
const plan = parsePlan(PLAN);

function sim(faults: string[]): RehearsalResult {
  return rehearse({
    plan,
    fleet: generateFleet(1000, createRng('fleet:1')),
    faults: faults.map(parseFault),
    seed: '1',
  });
}

test('without a metric fault, gated waves pass', () => {
  const r = sim([]);
  assert.equal(r.end_state, 'completed', r.reason ?? '');
});

test('a metric that rises when wave 2 starts halts and rolls back in wave 2; the report says when', () => {
  for (const spec of ['metric:error_ratio=0.2@wave=2', 'metric:error_ratio=0.2@wave=second']) {
    const r = sim([spec]);
    assert.ok(['rolling-back', 'rolled-back'].includes(r.end_state), `${spec}: ${r.end_state}`);
    assert.equal(r.halted_at_wave, 'second');
    assert.match(
      r.reason ?? '',
      /metric gate error_ratio breached, query "job:errors:ratio5m" = 0\.2, must be < 0\.05/,
    );
    const fired = r.transitions.find((t) => /metric gate error_ratio breached/.test(t.why));
    assert.ok(fired, 'the transition where the gate fired');
    assert.equal(fired.wave, 'second');
    assert.equal(fired.at_ms, r.time_to_halt_ms);
    // The second wave started before the gate fired, and the rest never did.
    const started = r.transitions.find((t) => t.why.startsWith('wave second started'));
    assert.ok(started && started.at_ms <= fired.at_ms);
    assert.equal(r.waves.find((w) => w.name === 'rest')?.selected ?? 0, 0);
  }
});

test('a metric that moves at a virtual time fires then; faults naming no gate or wave are refused', () => {
  const r = sim(['metric:error_ratio=0.5@after=30m']);
  assert.equal(r.halted_at_wave, 'first');
  assert.ok((r.time_to_halt_ms ?? 0) >= 30 * 60_000 && (r.time_to_halt_ms ?? 0) <= 32 * 60_000);
  assert.throws(() => sim(['metric:latency=1@wave=2']), /no metric gate named latency/);
  assert.throws(() => sim(['metric:error_ratio=1@wave=9']), /no wave 9/);
  assert.throws(() => parseFault('metric:error_ratio=high'), /not a number/);
  assert.throws(() => parseFault('metric:error_ratio'), /expected metric:NAME=VALUE/);
});

test('ringfence rehearse takes a metric fault', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-gates-sim-'));
  try {
    writeFileSync(join(dir, 'plan.yaml'), PLAN);
    const { stdout } = await run(
      process.execPath,
      [
        CLI,
        'rehearse',
        join(dir, 'plan.yaml'),
        '--quiet',
        '--fleet',
        '500',
        '--fault',
        'metric:error_ratio=0.2@wave=2',
        '--json',
      ],
      { env: { ...process.env, CI: 'true' }, timeout: 60_000 },
    ).catch((e: { stdout: string; stderr: string; code: number }) => {
      // A halted rehearsal may exit non-zero; its JSON report is what is checked here.
      if (!e.stdout) throw new Error(`rehearse failed (${e.code}): ${e.stderr}`);
      return e;
    });
    const r = JSON.parse(stdout) as RehearsalResult;
    assert.equal(r.halted_at_wave, 'second');
    assert.match(r.reason ?? '', /metric gate error_ratio breached/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

guardProcesses();
