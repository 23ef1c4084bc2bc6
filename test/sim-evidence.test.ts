// Evidence gates in rehearsal: simulated devices report Poisson signals, a shift fault moves a signal on the new
// release, the control plane takes the gate's looks as the server does, and the report says when the comparison
// gate fired against a pure failure budget (the same rehearsal without `compare`). Also `ringfence rehearse`
// with --signal and a shift fault, and the report in a real browser.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { testAlpha } from '../src/engine/evidence.ts';
import { type Plan, parsePlan } from '../src/engine/plan.ts';
import { parseFault } from '../src/sim/faults.ts';
import { generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { type RehearsalResult, rehearse } from '../src/sim/rehearsal.ts';
import { renderReport } from '../src/sim/report-html.ts';
import { parseSignalMean, poisson } from '../src/sim/signals.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import { guardProcesses } from './helpers/processes.ts';

const run = promisify(execFile);
const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;

// Wave 1 compares restarts on a fifth of tier B with the rest of tier B; then everything.
const PLAN = `
name: evidence
on_failure: halt
report_deadline: 1h
waves:
  - name: first
    select: tier=B
    size: 20%
    bake: 2h
    compare:
      confidence: 0.98
      min_samples: 20
      looks: 2
      signals:
        - { name: restarts, bad: higher, tolerance: 0.1, critical: true }
  - { name: rest, select: "*", size: 100% }
`;
const plan = parsePlan(PLAN);
const withoutCompare: Plan = { ...plan, waves: plan.waves.map((w) => ({ ...w, compare: null })) };

function sim(faults: string[], p: Plan = plan, signals?: Record<string, number>): RehearsalResult {
  return rehearse({
    plan: p,
    fleet: generateFleet(1000, createRng('fleet:1')),
    faults: faults.map(parseFault),
    signals,
    seed: '1',
  });
}

test('a release that doubles restarts on tier B is halted by the comparison gate; the failure budget alone lets it through', () => {
  const r = sim(['shift:restarts:+100%@tier=B']);
  assert.equal(r.end_state, 'halted', r.reason ?? '');
  assert.equal(r.halted_at_wave, 'first');
  assert.match(r.reason ?? '', /evidence gate fail: restarts fail \(p=/);
  const tierB = generateFleet(1000, createRng('fleet:1')).labels.filter((l) => l.tier === 'B').length;
  assert.equal(r.faults[0].devices, tierB, 'a shift covers every device of its selector');
  const ev = r.evidence_gates;
  assert.ok(ev, 'the report has the evidence-gates section');
  const c = ev.comparison;
  assert.ok(c, 'the comparison gate fired');
  assert.equal(c.wave, 'first');
  assert.equal(c.verdict, 'fail');
  assert.equal(c.status_after, 'halted');
  assert.equal(c.at_ms, r.time_to_halt_ms);
  const s = c.signals[0];
  assert.equal(s.signal, 'restarts');
  assert.ok(s.p !== null && s.p < testAlpha(plan.waves[0].compare!), `p=${s.p}`);
  assert.ok(s.effect !== null && s.effect > 0.1, `effect ${s.effect}`);
  assert.ok(s.n_treatment >= 20 && s.n_control >= 20);
  assert.equal(c.installed, r.exposed, 'nothing was installed after the halt');
  assert.ok(c.installed < 100, `${c.installed} devices exposed before the gate fired`);
  // The same rehearsal without compare: completes, every device installed the release.
  const b = ev.failure_budget;
  assert.equal(b.end_state, 'completed');
  assert.equal(b.halted, false);
  assert.equal(b.installed, r.fleet);
  const alone = sim([], withoutCompare);
  assert.equal(alone.end_state, 'completed');
  assert.equal(b.time_to_complete_ms, alone.time_to_complete_ms, 'the rerun is the same rehearsal');
  assert.equal(alone.evidence_gates, undefined, 'no section without evidence gates');
});

test('with no shift the rehearsal completes and every look passes; the same seed gives the same result', () => {
  const r = sim([]);
  assert.equal(r.end_state, 'completed', r.reason ?? '');
  const ev = r.evidence_gates;
  assert.ok(ev);
  assert.deepEqual(
    ev.looks.map((l) => [l.wave, l.look, l.verdict]),
    [
      ['first', 1, 'pass'],
      ['first', 2, 'pass'],
    ],
  );
  assert.equal(ev.looks[1].status_after, 'running', 'the final look let the rollout go on');
  assert.equal(ev.comparison, null);
  assert.deepEqual(ev.signals, [{ name: 'restarts', mean: 1 }]);
  // Looks at the bake's middle and end (the bake starts when the wave's devices have reported).
  const started = r.transitions.find((t) => t.to === 'baking');
  assert.ok(started);
  assert.equal(ev.looks[1].at_ms - ev.looks[0].at_ms, 3_600_000);
  assert.equal(ev.looks[1].at_ms, started.at_ms + 7_200_000);
  assert.equal(JSON.stringify(sim([])), JSON.stringify(r));
});

test('both gates fire: the comparison gate in wave 1, the failure budget later with more devices exposed', () => {
  // Health checks fail on 3 % of tier C (not in wave 1): the budget (0 failures) trips in wave rest.
  const r = sim(['shift:restarts:+100%@tier=B', 'fail:3%@tier=C']);
  const ev = r.evidence_gates;
  assert.ok(ev?.comparison);
  assert.equal(ev.failure_budget.halted, true);
  assert.equal(ev.failure_budget.wave, 'rest');
  assert.ok((ev.failure_budget.at_ms ?? 0) > ev.comparison.at_ms);
  assert.ok(ev.failure_budget.installed > ev.comparison.installed * 3);
  assert.match(ev.failure_budget.reason ?? '', /rest/);
});

test('a signal whose harm is lower (throughput -30%, mean 20) is caught; baseline means come from --signal', () => {
  const p = parsePlan(PLAN.replace('{ name: restarts, bad: higher', '{ name: throughput, bad: lower'));
  const bad = sim(['shift:throughput:-30%@tier=B'], p, { throughput: 20 });
  assert.equal(bad.evidence_gates?.comparison?.verdict, 'fail');
  assert.deepEqual(bad.evidence_gates?.signals, [{ name: 'throughput', mean: 20 }]);
  // The same drop where nobody measures it (tier A devices are not in wave 1): the gate passes.
  const elsewhere = sim(['shift:throughput:-30%@tier=A'], p, { throughput: 20 });
  assert.equal(elsewhere.end_state, 'completed', elsewhere.reason ?? '');
});

test('Poisson draws have the mean and variance asked for, small and large means alike', () => {
  for (const mean of [0.5, 3, 20, 200]) {
    const rng = createRng(`poisson:${mean}`);
    const n = 20_000;
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const k = poisson(rng, mean);
      assert.ok(Number.isInteger(k) && k >= 0);
      sum += k;
      sq += k * k;
    }
    const m = sum / n;
    const v = sq / n - m * m;
    // Five standard errors of the mean; the variance within 8 %.
    assert.ok(Math.abs(m - mean) < 5 * Math.sqrt(mean / n), `mean ${m} for ${mean}`);
    assert.ok(Math.abs(v / mean - 1) < 0.08, `variance ${v} for ${mean}`);
  }
});

test('shift faults and --signal are parsed, and bad ones refused in one line naming them', () => {
  const f = parseFault('shift:restarts:+100%@tier=B');
  assert.equal(f.kind, 'shift');
  assert.deepEqual(f.shift, { name: 'restarts', shift: 1 });
  assert.equal(f.selector.source, 'tier=B');
  assert.deepEqual(parseFault('shift:errors:-30%').shift, { name: 'errors', shift: -0.3 });
  assert.equal(parseFault('shift:errors:50%').selector.source, '*');
  for (const [spec, msg] of [
    ['shift:restarts:+100', /"shift:restarts:\+100": "\+100" is not a shift like \+100% or -30%/],
    ['shift:restarts', /"shift:restarts": expected shift:SIGNAL:\+PCT%/],
    ['shift:Restarts:+1%', /expected shift:SIGNAL/],
    ['shift:restarts:-150%', /"shift:restarts:-150%": a signal cannot fall by more than 100%/],
    ['shift:restarts:+10%@tier in (', /"shift:restarts:\+10%@tier in \(":/],
  ] as const) {
    assert.throws(
      () => parseFault(spec),
      (e: Error) => msg.test(e.message) && !e.message.includes('\n'),
      spec,
    );
  }
  assert.deepEqual(parseSignalMean('restarts=0.5'), { name: 'restarts', mean: 0.5 });
  assert.throws(() => parseSignalMean('restarts'), /--signal "restarts": expected NAME=MEAN/);
  assert.throws(
    () => parseSignalMean('restarts=0'),
    /--signal "restarts=0": the mean must be a number above 0/,
  );
  assert.throws(() => parseSignalMean('restarts=lots'), /must be a number/);
  // Naming a signal no gate compares is an error, not a rehearsal that silently tests nothing.
  assert.throws(
    () => sim(['shift:crashes:+50%']),
    /"shift:crashes:\+50%": .*compare no signal named crashes/,
  );
  assert.throws(() => sim([], plan, { crashes: 2 }), /--signal crashes: .*compare no signal named crashes/);
});

test('the HTML report shows when each gate fired, escaped', () => {
  const r = sim(['shift:restarts:+100%@tier=B']);
  const html = renderReport(r);
  assert.match(html, /<h2>When each gate would have fired<\/h2>/);
  assert.match(
    html,
    /<p id="evidence-comparison">The comparison gate halted at \+1h\d+m in wave first \(look 1, fail\): restarts fail \(p=[0-9.e-]+, effect 0\.\d+, treatment \d+, control \d+\); \d+ devices had installed the release\.<\/p>/,
  );
  assert.match(
    html,
    /<p id="evidence-budget">A pure failure budget .* let it through: completed at \+\d+h\d+m; 1000 devices/,
  );
  assert.match(html, /<tr data-wave="first" data-verdict="fail">/);
  // Hostile text in the result is escaped.
  const hostile = structuredClone(r);
  assert.ok(hostile.evidence_gates?.comparison);
  hostile.evidence_gates.comparison.wave = '<script>x</script>';
  hostile.evidence_gates.failure_budget.reason = '"><img src=x>';
  const page = renderReport(hostile);
  assert.doesNotMatch(page, /<script>x|<img src=x>/);
  assert.match(page, /&#60;script&#62;x/);
  // No section for a plan without evidence gates.
  assert.doesNotMatch(renderReport(sim([], withoutCompare)), /evidence-gates/);
});

async function cli(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return run(process.execPath, [CLI, ...args], {
    env: { ...process.env, CI: 'true' },
    timeout: 60_000,
  }).then(
    (o) => ({ ...o, code: 0 }),
    (e: { stdout: string; stderr: string; code: number }) => e,
  );
}

test('ringfence rehearse takes --signal and a shift fault, refuses bad ones, writes the section', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-sim-evidence-'));
  try {
    const file = join(dir, 'plan.yaml');
    writeFileSync(file, PLAN);
    const base = ['rehearse', file, '--quiet', '--fleet', '1000'];
    const shift = ['--fault', 'shift:restarts:+100%@tier=B', '--signal', 'restarts=2'];
    const out = join(dir, 'report');
    const human = await cli([...base, ...shift, '--report', out]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /fault shift:restarts:\+100%@tier=B: \d+ devices/);
    assert.match(human.stdout, /^The comparison gate halted at .* in wave first/m);
    assert.match(human.stdout, /^A pure failure budget .* let it through: completed/m);
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as RehearsalResult;
    assert.deepEqual(r.evidence_gates?.signals, [{ name: 'restarts', mean: 2 }]);
    assert.equal(r.evidence_gates?.comparison?.verdict, 'fail');
    assert.match(readFileSync(join(out, 'index.html'), 'utf8'), /id="evidence-comparison"/);
    const json = await cli([...base, ...shift, '--json']);
    assert.deepEqual(JSON.parse(json.stdout), r, '--json prints what report.json holds');
    for (const [extra, msg] of [
      [
        ['--fault', 'shift:restarts:+100'],
        /^ringfence: fault "shift:restarts:\+100": "\+100" is not a shift/,
      ],
      [['--signal', 'restarts=-1'], /^ringfence: --signal "restarts=-1": the mean must be a number above 0/],
      [
        ['--signal', 'crashes=1'],
        /^ringfence: --signal crashes=1: the plan's evidence gates compare no signal named crashes/,
      ],
      [['--fault', 'shift:crashes:+5%'], /compare no signal named crashes/],
    ] as const) {
      const bad = await cli([...base, ...extra]);
      assert.equal(bad.code, 2, `${extra.join(' ')}: ${bad.stderr}`);
      assert.match(bad.stderr, msg);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the report shows the section in Chromium', { skip: NO_CHROMIUM }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-sim-evidence-browser-'));
  const browser = await launchChromium();
  try {
    const r = sim(['shift:restarts:+100%@tier=B']);
    writeFileSync(join(dir, 'index.html'), renderReport(r));
    const page = await browser.newPage();
    await page.goto(pathToFileURL(join(dir, 'index.html')).href);
    // biome-ignore lint/performance/useDomNodeTextContent: the rendered text is what is under test
    const shown = (sel: string) => page.locator(sel).innerText();
    assert.match(await shown('#evidence-comparison'), /The comparison gate halted at .* in wave first/);
    assert.match(await shown('#evidence-budget'), /let it through: completed/);
    assert.equal(await page.locator('#evidence-looks tbody tr').count(), r.evidence_gates?.looks.length);
    assert.ok(await page.locator('#evidence-looks').isVisible());
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

guardProcesses();
