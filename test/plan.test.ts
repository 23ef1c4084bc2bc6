import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlanError, parsePlan } from '../src/engine/plan.ts';
import { matches, parseSelector } from '../src/engine/selector.ts';

describe('plan parsing', () => {
  it('parses sizes, durations and defaults', () => {
    const p = parsePlan('name: p\nwaves:\n  - name: a\n    size: "30%"\n    bake: 1h30m\n');
    assert.deepEqual(p.waves[0].size, { percent: 30 });
    assert.equal(p.waves[0].bakeMs, 5_400_000);
    assert.equal(p.onFailure, 'halt');
    assert.deepEqual(p.waves[0].maxFailures, { count: 0 });
  });

  const bad: Array<[string, RegExp]> = [
    ['name: p\nwaves:\n  - name: a\n    size: lots\n', /^plan\.yaml:4: waves\.0\.size: .*percentage/],
    ['name: p\nwaves: []\n', /^plan\.yaml:2: waves: a plan needs at least one wave/],
    [
      'name: p\nwaves:\n  - name: a\n    size: 1\n    bake: soon\n',
      /^plan\.yaml:5: waves\.0\.bake: invalid duration/,
    ],
    ['name: p\nwaves:\n  - name: a\n    size: 1\n    colour: red\n', /^plan\.yaml:3: waves\.0: .*colour/],
    ['name: p\nwaves:\n  - name: a\n    size: 1\n    select: "tier in (A"\n', /waves\.0\.select: unbalanced/],
    [
      'name: p\nwaves:\n  - name: a\n    size: 1\n  - name: a\n    size: 2\n',
      /waves\.1\.name: duplicate wave name/,
    ],
    ['name: [unclosed\n', /^plan\.yaml:\d+: invalid YAML/],
  ];
  for (const [src, re] of bad) {
    it(`rejects ${JSON.stringify(src.slice(0, 40))}… with file, line and field`, () => {
      assert.throws(
        () => parsePlan(src),
        (e: Error) => e instanceof PlanError && re.test(e.message),
      );
    });
  }
});

describe('selectors', () => {
  const l = { tier: 'B', env: 'prod', role: 'replica' };
  it('supports equality, sets, negation and presence', () => {
    assert.ok(matches(parseSelector('tier in (B,C), env=prod, !canary'), l));
    assert.ok(!matches(parseSelector('tier notin (B)'), l));
    assert.ok(matches(parseSelector('role!=primary'), l));
    assert.ok(!matches(parseSelector('canary'), l));
    assert.ok(matches(parseSelector('*'), {}));
  });
  it('rejects malformed terms', () => {
    assert.throws(() => parseSelector('tier in ()'), /empty set/);
    assert.throws(() => parseSelector('a b c'), /cannot parse/);
  });
});

describe('docs/plans.md', () => {
  it('every YAML example in the reference parses', async () => {
    const { readFileSync } = await import('node:fs');
    const md = readFileSync(new URL('../docs/plans.md', import.meta.url), 'utf8');
    const blocks = [...md.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.ok(blocks.length >= 2);
    const full = parsePlan(blocks[0], 'docs/plans.md');
    assert.equal(full.waves.length, 5);
    assert.deepEqual(full.deviceWindows?.windows['us-night'], {
      cron: '0 2 * * *',
      durationMs: 7_200_000,
      timezone: 'America/New_York',
    });
    assert.equal(full.waves[4].window?.cron, '0 3 * * 6', 'a wave window overrides the plan window');
    assert.equal(full.waves[0].window?.cron, '0 1 * * 1-5', 'waves inherit the plan window');
    assert.equal(full.releaseAgeMs, 2 * 86_400_000);
  });

  it('rejects a bad device window with file, line and field', () => {
    assert.throws(
      () =>
        parsePlan(
          'name: p\ndevice_windows:\n  label: m\n  windows:\n    a: { cron: "0 1 * *", duration: 1h, timezone: UTC }\nwaves:\n  - { name: a, size: 1 }\n',
        ),
      /^PlanError: plan\.yaml:5: device_windows\.windows\.a\.cron: cron must have five fields|plan\.yaml:5: device_windows\.windows\.a\.cron/,
    );
  });
});

describe('plan defaults', () => {
  it('defaults the report deadline to 15 minutes', () => {
    const p = parsePlan('name: x\nwaves:\n  - { name: a, size: 1 }\n');
    assert.equal(p.waves[0].reportDeadlineMs, 15 * 60 * 1000);
    assert.equal(p.waves[0].bakeMs, 0);
    assert.equal(p.firstWaveCapPercent, 5);
  });
});
