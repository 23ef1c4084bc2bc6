// Guards an operator meets before anything moves: the first-wave cap is enforced (not advisory) at plan apply
// and rollout start, a selector that matches nothing is an error, and a dry run shows who would be selected.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import type { AuditEntry } from '../src/server/db/audit.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { enrollDevices, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const WIDE = 'name: wide\nwaves:\n  - name: first\n    size: 50%\n  - name: rest\n    size: 100%\n';
const NARROW =
  'name: narrow\nfirst_wave_cap: 10%\nwaves:\n  - name: one\n    size: 1\n  - name: rest\n    size: 100%\n';

describe('rollout guards', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer();
    // 20 devices run `app`; 4 more do not; one of the 20 is held.
    const labels = Array.from({ length: 24 }, (_, i) => ({ site: i < 20 ? 'a' : 'b' }));
    const runs = await enrollDevices(ts.conn, labels.slice(0, 20), 'app');
    await enrollDevices(ts.conn, labels.slice(20), 'other');
    await api(ts.conn, 'POST', '/v1/admin/fleet/hold', { selector: `id=${runs[0].id}` });
    await release(ts.conn, 'app', '1');
  });
  after(() => ts.close());

  it('refuses a plan whose first wave is over its cap against the live fleet, unless allowed (audited)', async () => {
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/plans', { source: WIDE }),
      /409 first wave "first" exposes 50\.0% of the fleet, over the 5% cap/,
    );
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: WIDE,
      allow_wide: true,
      reason: 'the test fleet is small',
    });
    const log = await api<AuditEntry[]>(ts.conn, 'GET', '/v1/admin/audit?subject=plan/wide');
    assert.equal((log.at(-1)?.detail as { allow_wide?: boolean } | undefined)?.allow_wide, true);
    // Applied while allowed, it is still refused at rollout start without the flag.
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'app@1', plan: 'wide' }),
      /409 first wave "first" exposes 50\.0% of the fleet/,
    );
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: NARROW });
  });

  it('shows per wave who would be selected and who is left out, starting nothing', async () => {
    const d = await api<{
      dry_run: boolean;
      waves: Array<{ wave: string; selected: number; excluded: Record<string, number> }>;
    }>(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'app@1', plan: 'narrow', dry_run: true });
    assert.equal(d.dry_run, true);
    assert.deepEqual(
      d.waves.map((w) => [w.wave, w.selected]),
      [
        ['one', 1],
        ['rest', 18],
      ],
    );
    assert.equal(d.waves[0].excluded.no_component + d.waves[1].excluded.no_component, 4);
    assert.equal(d.waves[0].excluded.held + d.waves[1].excluded.held >= 1, true);
    assert.deepEqual(await api<RolloutView[]>(ts.conn, 'GET', '/v1/admin/rollouts'), []);
  });

  it('starts with the cap respected, and skips devices that do not run the component', async () => {
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'app@1',
      plan: 'narrow',
    });
    assert.equal(r.waves[0].selected, 1);
    assert.ok(r.waves[0].skipped >= 1, 'devices without app are shown as skipped');
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${r.id}/abort`, {});
  });

  it('measures a rollout against the devices that run its component, not the whole fleet', async () => {
    // 2 of the 20 devices that run app are 10 %, over a 9 % cap; of all 24 devices they would be 8.3 %.
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: two\nfirst_wave_cap: 9%\nwaves:\n  - name: two\n    size: 2\n  - name: rest\n    size: 100%\n',
    });
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'app@1', plan: 'two' }),
      /409 first wave "two" exposes 10\.0% of the fleet, over the 9% cap/,
    );
    const d = await api<{ fleet: number; runs_component: number }>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'app@1',
      plan: 'two',
      dry_run: true,
    });
    assert.deepEqual([d.fleet, d.runs_component], [24, 20]);
  });

  it('refuses a selector that matches no device, unless allowed', async () => {
    for (const route of ['hold', 'unhold', 'channel', 'defer']) {
      const body = { selector: 'evn=prod', channel: 'early', until: null };
      await assert.rejects(
        api(ts.conn, 'POST', `/v1/admin/fleet/${route}`, body),
        /404 selector "evn=prod" matches no device/,
      );
      const ok = await api<{ devices: string[] }>(ts.conn, 'POST', `/v1/admin/fleet/${route}`, {
        ...body,
        allow_empty: true,
      });
      assert.deepEqual(ok.devices, []);
    }
  });
});
