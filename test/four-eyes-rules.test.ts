// Four eyes and required reasons as pure rules (services/rollout-rules.ts), the plan and server.yaml switches.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parsePlan } from '../src/engine/plan.ts';
import { governanceOf, loadServerConfig } from '../src/server/config.ts';
import {
  operatorName,
  reasonRefusal,
  releaseAwaiting,
  releaseFourEyesRefusal,
  startReasonRefusal,
  waveAwaiting,
  waveFourEyesRefusal,
} from '../src/server/services/rollout-rules.ts';

describe('four eyes (pure rules)', () => {
  it('compares operator names, so a second token of the same person is not a second pair of eyes', () => {
    assert.equal(operatorName('alice'), 'alice');
    assert.equal(operatorName('alice/ci'), 'alice');
    const base = { ref: 'shop@2.0.0', importedBy: 'alice', fourEyes: true };
    const msg = 'four eyes: alice imported shop@2.0.0 and may not approve it (another approver must)';
    assert.equal(releaseFourEyesRefusal({ ...base, approver: 'alice' }), msg);
    assert.equal(releaseFourEyesRefusal({ ...base, approver: 'alice/ci' }), msg);
    assert.equal(releaseFourEyesRefusal({ ...base, importedBy: 'alice/ci', approver: 'alice' }), msg);
    assert.equal(releaseFourEyesRefusal({ ...base, approver: 'bob' }), null);
    assert.equal(releaseFourEyesRefusal({ ...base, approver: 'alicia' }), null, 'names, not prefixes');
  });

  it('never refuses with the rule off, a row from before (no importer/starter) or an unnamed caller', () => {
    const base = { ref: 'shop@2.0.0', importedBy: 'alice', approver: 'alice' };
    assert.equal(releaseFourEyesRefusal({ ...base, fourEyes: false }), null);
    assert.equal(releaseFourEyesRefusal({ ...base, importedBy: null, fourEyes: true }), null);
    assert.equal(releaseFourEyesRefusal({ ...base, approver: undefined, fourEyes: true }), null);
    const wave = { id: 7, wave: 'prod', startedBy: 'alice', approver: 'alice' };
    assert.equal(
      waveFourEyesRefusal({ ...wave, fourEyes: true }),
      'four eyes: alice started rollout 7 and may not approve its wave "prod"',
    );
    assert.equal(waveFourEyesRefusal({ ...wave, approver: 'alice/ci', fourEyes: true }) !== null, true);
    assert.equal(waveFourEyesRefusal({ ...wave, fourEyes: false }), null);
    assert.equal(waveFourEyesRefusal({ ...wave, startedBy: null, fourEyes: true }), null);
    assert.equal(waveFourEyesRefusal({ ...wave, approver: 'bob', fourEyes: true }), null);
  });

  it('says what waits for whose approval', () => {
    const rel = { ref: 'shop@2.0.0', approvedAt: null, importedBy: 'alice/ci' };
    assert.deepEqual(releaseAwaiting(rel, true), { what: 'release shop@2.0.0', by_anyone_but: 'alice' });
    assert.deepEqual(releaseAwaiting(rel, false), { what: 'release shop@2.0.0', by_anyone_but: null });
    assert.deepEqual(releaseAwaiting({ ...rel, importedBy: null }, true)?.by_anyone_but, null);
    assert.equal(releaseAwaiting({ ...rel, approvedAt: 1 }, true), null);
    const ro = { id: 7, status: 'awaiting-approval' as const, nextWave: 'prod', startedBy: 'alice' };
    assert.deepEqual(waveAwaiting(ro, true), { what: 'wave "prod" of rollout 7', by_anyone_but: 'alice' });
    assert.equal(waveAwaiting(ro, false)?.by_anyone_but, null);
    assert.equal(waveAwaiting({ ...ro, status: 'running' }, true), null);
  });
});

describe('required reasons (pure rules)', () => {
  it('asks a reason for an emergency start, force and allow-wide, and a blank one does not count', () => {
    assert.equal(startReasonRefusal({}), null);
    assert.equal(startReasonRefusal({ emergency: false, force: false, allowWide: false }), null);
    assert.equal(startReasonRefusal({ emergency: true }), 'a reason is required for an emergency start');
    assert.equal(startReasonRefusal({ force: true }), 'a reason is required for forcing the promotion gate');
    assert.equal(startReasonRefusal({ allowWide: true }), 'a reason is required for allow-wide');
    assert.equal(
      startReasonRefusal({ allowWide: true, reason: '   ' }),
      'a reason is required for allow-wide',
    );
    assert.equal(startReasonRefusal({ emergency: true, force: true, reason: 'CVE-2025-1' }), null);
    assert.equal(reasonRefusal('stop-all', undefined), 'a reason is required for stop-all');
    assert.equal(reasonRefusal('stop-all', 'incident 42'), null);
  });
});

describe('four eyes switches', () => {
  const plan = (extra: string) =>
    `name: p\n${extra}waves:\n  - name: prod\n    size: 1\n    approval: true\n`;
  it('a plan has four eyes on unless it says four_eyes: false', () => {
    assert.equal(parsePlan(plan('')).fourEyes, true);
    assert.equal(parsePlan(plan('four_eyes: false\n')).fourEyes, false);
    assert.throws(() => parsePlan(plan('four_eyes: maybe\n')), /plan\.yaml:2: four_eyes: /);
  });

  it('server.yaml: governance.four_eyes, on by default (and written so in a new file), validated', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-gov-'));
    try {
      const first = loadServerConfig(dir);
      assert.ok(first.created);
      assert.deepEqual(governanceOf(first.config), { fourEyes: true, pinMaxDevices: 10 });
      writeFileSync(join(dir, 'server.yaml'), 'governance:\n  four_eyes: false\n');
      assert.deepEqual(governanceOf(loadServerConfig(dir).config), { fourEyes: false, pinMaxDevices: 10 });
      writeFileSync(join(dir, 'server.yaml'), 'governance:\n  pin_max_devices: 50\n');
      assert.deepEqual(governanceOf(loadServerConfig(dir).config), { fourEyes: true, pinMaxDevices: 50 });
      writeFileSync(join(dir, 'server.yaml'), 'port: 8080\n');
      assert.deepEqual(
        governanceOf(loadServerConfig(dir).config),
        { fourEyes: true, pinMaxDevices: 10 },
        'omitted: the defaults',
      );
      writeFileSync(join(dir, 'server.yaml'), 'governance:\n  four_eyes: "no"\n');
      assert.throws(() => loadServerConfig(dir), /server\.yaml:2: governance\.four_eyes: /);
      writeFileSync(join(dir, 'server.yaml'), 'governance:\n  four_eye: false\n');
      assert.throws(() => loadServerConfig(dir), /server\.yaml:\d+: governance/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
