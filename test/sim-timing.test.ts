// The rehearsal's timing comes from the plan, the devices and the flags, and a deadline that healthy devices
// cannot meet is warned about (printed, in --json and in the HTML report) instead of silently "rolling back".
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { parsePlan } from '../src/engine/plan.ts';
import { generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { type RehearsalResult, rehearse } from '../src/sim/rehearsal.ts';
import { resolveTiming, timeToReport, timingWarnings } from '../src/sim/timing.ts';
import { guardProcesses } from './helpers/processes.ts';

const run = promisify(execFile);
const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'rf-sim-timing-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The plan of the issue: a 2-minute report_deadline, as a lab or an impatient operator would write it.
const SHORT = `
name: short
on_failure: halt-and-rollback
report_deadline: 2m
waves:
  - { name: canary, select: "env=prod, ring=canary", size: 2, bake: 10m, max_failures: 0 }
  - { name: early, select: env=prod, size: 10%, bake: 30m, max_failures: 0 }
  - { name: broad, size: 100%, max_failures: 1% }
`;
const shortFile = join(dir, 'short.yaml');
writeFileSync(shortFile, SHORT);
const short = parsePlan(SHORT, shortFile);
const fleet = () => generateFleet(1500, createRng('fleet:timing'));
const total = (r: RehearsalResult, k: 'failed' | 'succeeded' | 'rolled_back') =>
  r.waves.reduce((s, w) => s + w[k], 0);

test('defaults fit the plan: a 2-minute report_deadline completes with no fault and no warning', () => {
  const r = rehearse({ plan: short, fleet: fleet(), seed: '1' });
  assert.deepEqual(r.warnings, []);
  assert.equal(r.end_state, 'completed', `${r.end_state}: ${r.reason}`);
  assert.equal(total(r, 'failed'), 0);
  assert.equal(total(r, 'rolled_back'), 0);
  assert.equal(r.exposed, 1500);
  assert.ok(r.settings.time_to_report_ms <= 2 * 60_000, `${r.settings.time_to_report_ms} ms to report`);
  assert.equal(r.settings.poll_ms, 30_000, "the server's default check-in interval");
  assert.deepEqual(r.settings.sources, {
    poll: 'server-default',
    apply: 'plan',
    health: 'plan',
    tick: 'plan',
  });
});

test('the model: defaults from the shortest deadline, capped; flags and the agent configuration win', () => {
  const standard = resolveTiming(
    parsePlan('name: s\nreport_deadline: 30m\nwaves: [{ name: a, size: 1 }]\n', 's.yaml'),
  );
  assert.equal(standard.pollMs, 30_000);
  assert.deepEqual(standard.applyMs, [60_000, 180_000]);
  assert.equal(standard.healthMs, 300_000);
  assert.equal(timeToReport(standard), 30_000 + 180_000 + 300_000);
  const t = resolveTiming(short);
  assert.deepEqual(t.applyMs, [12_000, 24_000]);
  assert.equal(t.healthMs, 30_000);
  const fromAgent = resolveTiming(short, { agent: { pollMs: 5000, healthMs: 60_000 } });
  assert.equal(fromAgent.pollMs, 5000);
  assert.equal(fromAgent.healthMs, 60_000);
  assert.equal(fromAgent.sources.health, 'agent-config');
  const flags = resolveTiming(short, {
    pollMs: 60_000,
    healthMs: 1000,
    agent: { pollMs: 5000, healthMs: 60_000 },
  });
  assert.equal(flags.pollMs, 60_000);
  assert.equal(flags.healthMs, 1000);
  assert.equal(flags.sources.poll, 'flag');
});

test('a deadline shorter than check-in + apply + health warns, naming the wave and the numbers', () => {
  // Only the wave with its own short deadline is named.
  const plan = parsePlan(
    `name: mixed
report_deadline: 1h
waves:
  - { name: first, size: 1 }
  - { name: hasty, size: 100%, report_deadline: 3m }
`,
    'mixed.yaml',
  );
  const t = resolveTiming(plan, { pollMs: 60_000, applyMs: [30_000, 60_000], healthMs: 5 * 60_000 });
  const w = timingWarnings(plan, t);
  assert.equal(w.length, 1);
  assert.equal(w[0].wave, 'hasty');
  assert.equal(w[0].report_deadline_ms, 3 * 60_000);
  assert.equal(w[0].time_to_report_ms, 7 * 60_000);
  assert.match(
    w[0].message,
    /^wave hasty: report_deadline 3m is shorter than the modelled time to report, 7m \(check-in every 1m \+ apply up to 1m \+ health 5m\)/,
  );
});

test('CLI: the old fixed figures on a 2-minute deadline warn (printed, --json, HTML) and the misses count as failures', async () => {
  const args = [CLI, 'rehearse', shortFile, '--fleet', '800', '--checkin-every', '1m', '--health-time', '5m'];
  const human = await run('node', [...args, '--quiet']);
  assert.match(
    human.stdout,
    /^warning: wave canary: report_deadline 2m is shorter than the modelled time to report, 6m24s \(check-in every 1m \+ apply up to 24s \+ health 5m\)/m,
  );
  assert.match(
    human.stdout,
    /^device model: check-in every 1m \(flag\), apply 12s–24s \(plan\), health 5m \(flag\)/m,
  );
  assert.match(human.stdout, /end state: rolled-back/);
  assert.match(human.stdout, /^note: the plan gives devices less time to report than the model needs/m);

  const report = join(dir, 'report');
  const js = await run('node', [...args, '--json', '--report', report]);
  const r = JSON.parse(js.stdout) as RehearsalResult;
  assert.deepEqual(
    r.warnings.map((w) => w.wave),
    ['canary', 'early', 'broad'],
  );
  assert.equal(r.warnings[0].time_to_report_ms, 60_000 + 24_000 + 300_000);
  assert.equal(r.warnings[0].report_deadline_ms, 120_000);
  assert.match(js.stderr, /rehearse: warning: wave canary: report_deadline 2m/, 'also on stderr with --json');
  // The healthy canaries missed the deadline: they are counted as failed, and were put back.
  const canary = r.waves[0];
  assert.equal(r.end_state, 'rolled-back');
  assert.ok(canary.exposed > 0);
  assert.equal(canary.failed, canary.exposed);
  assert.equal(canary.rolled_back, canary.exposed);
  const html = readFileSync(join(report, 'index.html'), 'utf8');
  assert.match(html, /<div id="warnings"/);
  assert.match(html, /wave canary: report_deadline 2m is shorter than the modelled time to report, 6m24s/);
  assert.match(html, /<p id="device-model">Simulated devices check in every 1m \(flag\)/);
  assert.deepEqual(JSON.parse(readFileSync(join(report, 'report.json'), 'utf8')).warnings, r.warnings);

  // Without the old figures the same plan completes, and the report has no warning block.
  const ok = JSON.parse(
    (await run('node', [CLI, 'rehearse', shortFile, '--fleet', '800', '--json', '--quiet'])).stdout,
  ) as RehearsalResult;
  assert.equal(ok.end_state, 'completed');
  assert.deepEqual(ok.warnings, []);
});

test('CLI: --agent-config supplies the check-in interval and the probation window; flags win', async () => {
  const cfg = join(dir, 'agent.yaml');
  writeFileSync(
    cfg,
    [
      'server: http://127.0.0.1:8080',
      'state_dir: ./state',
      'poll_interval: 40s',
      'components:',
      '  - name: c',
      '    backend: { type: dir, path: ./app }',
      '    probation: { window: 45s, interval: 5s }',
    ].join('\n'),
  );
  const base = [CLI, 'rehearse', shortFile, '--fleet', '300', '--json', '--quiet', '--agent-config', cfg];
  const a = JSON.parse((await run('node', base)).stdout) as RehearsalResult;
  assert.equal(a.settings.poll_ms, 40_000);
  assert.equal(a.settings.probation_ms, 45_000);
  assert.equal(a.settings.sources.poll, 'agent-config');
  assert.deepEqual(a.warnings, [], '40s + 24s + 45s fits in 2m');
  const b = JSON.parse((await run('node', [...base, '--poll', '2m'])).stdout) as RehearsalResult;
  assert.equal(b.settings.poll_ms, 120_000);
  assert.equal(b.warnings.length, 3, '2m + 24s + 45s does not');
  await assert.rejects(
    run('node', [CLI, 'rehearse', shortFile, '--fleet', '10', '--poll', '1m', '--checkin-every', '1m']),
    /give --checkin-every or --poll, not both/,
  );
  await assert.rejects(
    run('node', [CLI, 'rehearse', shortFile, '--fleet', '10', '--apply-time', '2m..1m']),
    /--apply-time: 2m\.\.1m: the range ends before it starts/,
  );
});

test('devices report right after their transaction, as the agent does, not a whole check-in later', () => {
  // Check-in every 10 min, seconds to apply and check: the report arrives within 10 min of the offer,
  // so a 15-minute deadline holds (waiting for the next check-in to report would take up to 20 min).
  const plan = parsePlan(
    'name: p\nreport_deadline: 15m\nwaves: [{ name: all, size: 100%, max_failures: 0 }]\n',
    'p.yaml',
  );
  const r = rehearse({
    plan,
    fleet: generateFleet(500, createRng('x')),
    pollMs: 10 * 60_000,
    installMs: [1000, 2000],
    probationMs: 1000,
  });
  assert.deepEqual(r.warnings, []);
  assert.equal(r.end_state, 'completed', `${r.end_state}: ${r.reason}`);
  assert.equal(total(r, 'failed'), 0);
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
