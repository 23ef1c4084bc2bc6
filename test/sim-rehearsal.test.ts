// The rehearsal: the real engine over simulated devices. Determinism, each fault model's effect, the July 2024 case.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
const PLAN_FILE = new URL('../examples/plans/standard.yaml', import.meta.url).pathname;
const plan = parsePlan(readFileSync(PLAN_FILE, 'utf8'), PLAN_FILE);
const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;

// A plan with failure budgets, so that moderate faults show up in the numbers instead of halting at once.
const tolerant = parsePlan(`
name: tolerant
report_deadline: 1h
waves:
  - { name: first, select: "env in (dev,staging)", size: 100%, bake: 1h, max_failures: 100%, min_success: 0 }
  - { name: rest, select: env=prod, size: 100%, max_failures: 100%, min_success: 0 }
`);

function sim(faults: string[], opts: { n?: number; seed?: string; p?: typeof plan } = {}): RehearsalResult {
  const fleet = generateFleet(opts.n ?? 2000, createRng(`fleet:${opts.seed ?? '1'}`));
  return rehearse({
    plan: opts.p ?? tolerant,
    fleet,
    faults: faults.map(parseFault),
    seed: opts.seed ?? '1',
  });
}

const total = (r: RehearsalResult, k: 'failed' | 'succeeded' | 'rolled_back' | 'exposed') =>
  r.waves.reduce((s, w) => s + w[k], 0);

test('the same seed gives byte-identical JSON through the CLI; another seed differs', async () => {
  const args = [
    CLI,
    'rehearse',
    PLAN_FILE,
    '--fleet',
    '3000',
    '--fault',
    'fail:1%@env=prod',
    '--json',
    '--quiet',
  ];
  const a = await run('node', [...args, '--seed', '42']);
  const b = await run('node', [...args, '--seed', '42']);
  const c = await run('node', [...args, '--seed', '43']);
  assert.equal(a.stdout, b.stdout);
  assert.notEqual(a.stdout, c.stdout);
  const r = JSON.parse(a.stdout) as RehearsalResult;
  assert.equal(r.fleet, 3000);
  assert.equal(r.waves.length, 6);
  assert.equal(a.stdout.trim().split('\n').length, 1, '--json prints one JSON object');
});

test('a healthy release goes through every wave of the standard plan, in order, with bake in between', () => {
  const r = sim([], { p: plan, n: 5000 });
  assert.equal(r.end_state, 'completed');
  assert.equal(r.exposed, 5000);
  assert.equal(total(r, 'failed'), 0);
  const reached = r.waves.map((w) => w.reached_at_ms!);
  for (let i = 1; i < reached.length; i++) assert.ok(reached[i] > reached[i - 1], 'waves start in order');
  // staging waits for dev's 1h bake, canary for staging's 1d bake: a week of virtual time in a blink.
  assert.ok(reached[2] - reached[1] >= 86_400_000);
  assert.ok(r.time_to_complete_ms! > 4 * 86_400_000);
  assert.equal(r.waves[2].selected, 2, 'the canary wave takes exactly 2 devices');
});

test('CrowdStrike-style release: 100% crash-loop on install is confined to the first wave and rolled back', () => {
  const r = sim(['crash'], { p: plan, n: 20_000 });
  assert.equal(r.end_state, 'rolled-back');
  assert.equal(r.halted_at_wave, 'dev');
  const [first, ...rest] = r.waves;
  assert.ok(first.exposed > 0);
  assert.equal(first.failed, first.exposed, 'every exposed device failed');
  assert.equal(first.rolled_back, first.exposed, 'every exposed device came back on its own');
  for (const w of rest) assert.equal(w.exposed, 0, `wave ${w.name} was never exposed`);
  assert.ok(r.exposed_percent < 5, `blast radius ${r.exposed_percent}% stays under 5%`);
  assert.ok(r.time_to_halt_ms! <= 30 * 60_000, 'halted within half an hour');
  assert.equal(r.series.at(-1)!.running, 0, 'nothing runs the bad release at the end');
});

test('fault: crash on a slice of the fleet fails exactly those devices', () => {
  const base = sim([]);
  const r = sim(['crash:10%']);
  assert.equal(total(base, 'failed'), 0);
  const hit = r.faults[0].devices;
  assert.ok(hit > 100 && hit < 300, `${hit} devices of 2000 at 10%`);
  assert.equal(total(r, 'failed'), hit);
  assert.equal(total(r, 'rolled_back'), hit);
});

test('fault: health failure rate by label only hits that label', () => {
  const r = sim(['fail:50%@tier=A']);
  const fleet = generateFleet(2000, createRng('fleet:1'));
  const tierA = fleet.labels.filter((l) => l.tier === 'A').length;
  assert.equal(total(r, 'failed'), r.faults[0].devices);
  assert.ok(r.faults[0].devices > tierA * 0.35 && r.faults[0].devices < tierA * 0.65);
  // A label no device has injects nothing.
  assert.equal(sim(['fail:50%@tier=Z']).faults[0].devices, 0);
});

test('fault: slow reporting makes the rollout take longer but not fail', () => {
  const base = sim([]);
  const slow = sim(['slow:100%:40m']);
  assert.equal(slow.end_state, 'completed');
  assert.equal(total(slow, 'failed'), 0);
  assert.ok(slow.time_to_complete_ms! >= base.time_to_complete_ms! + 2 * 40 * 60_000);
});

test('fault: slow reports beyond the deadline count as failures', () => {
  const r = sim(['slow:5%:3h']);
  assert.equal(total(r, 'failed'), r.faults[0].devices);
});

test('fault: offline devices are never exposed and miss their deadline', () => {
  const r = sim(['offline:10%']);
  const hit = r.faults[0].devices;
  assert.equal(r.exposed, 2000 - hit);
  assert.equal(total(r, 'failed'), hit);
});

test('fault: devices offline for a while catch up when they return', () => {
  const r = sim(['offline:10%:30m']);
  assert.equal(r.exposed, 2000);
  assert.equal(total(r, 'failed'), 0);
});

test('fault: a flaky network delays check-ins', () => {
  const base = sim([]);
  const r = sim(['flaky:100%:60%']);
  assert.ok(r.device_events > base.device_events * 1.5, `${r.device_events} vs ${base.device_events} events`);
  assert.ok(r.time_to_complete_ms! > base.time_to_complete_ms!);
});

test('fault: devices that never report are failed by the deadline although they installed', () => {
  const r = sim(['never:5%']);
  const hit = r.faults[0].devices;
  assert.equal(r.exposed, 2000);
  assert.equal(total(r, 'failed'), hit);
  assert.equal(total(r, 'succeeded'), 2000 - hit);
});

test('fault specs are validated with one-line errors', () => {
  assert.throws(() => parseFault('boom:5%'), /unknown kind "boom"/);
  assert.throws(() => parseFault('fail'), /give a rate/);
  assert.throws(() => parseFault('fail:150%'), /between 0 and 100%/);
  assert.throws(() => parseFault('fail:5%@tier in (A'), /selector|cannot parse/);
  assert.deepEqual(parseFault('slow:20%:2h').durationMs, 7_200_000);
});

test('generated fleets are realistic: envs, tiers, roles, clusters, sites with time zones, a canary ring', () => {
  const f = generateFleet(10_000, createRng('x'));
  const share = (k: string, v: string) => f.labels.filter((l) => l[k] === v).length / f.labels.length;
  assert.ok(share('env', 'prod') > 0.85 && share('env', 'dev') > 0.01);
  assert.ok(share('tier', 'A') > 0.1 && share('tier', 'C') > 0.4);
  assert.ok(share('role', 'primary') > 0.01 && share('role', 'replica') > 0.2);
  assert.ok(share('ring', 'canary') > 0.005);
  assert.equal(new Set(f.labels.map((l) => l.tz)).size, 12);
  assert.equal(new Set(f.ids).size, 10_000);
  for (const l of f.labels) assert.ok(l.cluster && l.site && l.tz && l.tier && l.env);
});

test('CLI: an inventory file, a report folder, and one-line errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-sim-'));
  try {
    const inv = join(dir, 'fleet.csv');
    const rows = ['id,env,tier,role,cluster'];
    for (let i = 0; i < 60; i++)
      rows.push(`h${i},${i < 5 ? 'dev' : i < 10 ? 'staging' : 'prod'},${'ABC'[i % 3]},replica,c${i}`);
    rows.push('c1,prod,C,replica,cx', 'c2,prod,C,replica,cy');
    writeFileSync(inv, rows.join('\n'));
    const out = await run('node', [CLI, 'rehearse', PLAN_FILE, '--fleet', inv, '--report', join(dir, 'r')]);
    assert.match(out.stdout, /rehearsal of plan standard over 62 simulated devices/);
    assert.match(out.stdout, /end state: completed/);
    const json = JSON.parse(readFileSync(join(dir, 'r', 'report.json'), 'utf8')) as RehearsalResult;
    assert.equal(json.fleet, 62);
    const html = readFileSync(join(dir, 'r', 'index.html'), 'utf8');
    assert.match(html, /<svg id="exposure-chart"/);
    assert.doesNotMatch(html, /<script|https?:\/\/|<link /, 'self-contained: no scripts or external assets');
    await assert.rejects(
      run('node', [CLI, 'rehearse', PLAN_FILE, '--fleet', '10', '--fault', 'nope']),
      (e: { stderr: string; code: number }) => {
        assert.equal(e.code, 2, 'a bad --fault is a usage error');
        assert.match(e.stderr, /^ringfence: fault "nope": unknown kind/);
        return true;
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: --from-server rehearses over the live fleet of a real server', async () => {
  const { startTestServer } = await import('./helpers/server.ts');
  const s = await startTestServer();
  try {
    const h = { authorization: `Bearer ${s.conn.token}`, 'content-type': 'application/json' };
    const tok = (await (
      await fetch(`${s.url}/v1/admin/enroll-tokens`, { method: 'POST', headers: h, body: '{"uses":12}' })
    ).json()) as { token: string };
    for (let i = 0; i < 12; i++) {
      const env = i < 2 ? 'dev' : i < 4 ? 'staging' : 'prod';
      const labels = {
        env,
        tier: 'ABC'[i % 3],
        role: 'replica',
        cluster: `c${i}`,
        ...(i >= 10 ? { ring: 'canary' } : {}),
      };
      const res = await fetch(`${s.url}/v1/enroll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: tok.token, name: `d${i}`, labels }),
      });
      assert.equal(res.status, 200);
    }
    const out = await run('node', [CLI, 'rehearse', PLAN_FILE, '--from-server', '--json'], {
      env: { ...process.env, RINGFENCE_SERVER: s.url, RINGFENCE_TOKEN: s.conn.token },
    });
    const r = JSON.parse(out.stdout) as RehearsalResult;
    assert.equal(r.fleet, 12);
    assert.equal(r.end_state, 'completed');
    assert.equal(r.waves[0].selected, 2);
    assert.equal(r.waves[2].selected, 2, 'the two canaries');
    // No admin endpoint tells the live poll interval: the server's default, unless --poll says otherwise.
    assert.equal(r.settings.poll_ms, 30_000);
    assert.equal(r.settings.sources.poll, 'server-default');
    const polled = await run(
      'node',
      [CLI, 'rehearse', PLAN_FILE, '--from-server', '--poll', '5m', '--json'],
      {
        env: { ...process.env, RINGFENCE_SERVER: s.url, RINGFENCE_TOKEN: s.conn.token },
      },
    );
    assert.equal((JSON.parse(polled.stdout) as RehearsalResult).settings.poll_ms, 300_000);
  } finally {
    await s.close();
  }
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
