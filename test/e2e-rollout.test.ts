// End to end: a real server on loopback, real agent processes, real files; a good rollout completes and a bad
// one halts after its first wave with every exposed device rolled back on its own.
import assert from 'node:assert/strict';
import { existsSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { type DeviceSpec, type SpawnedDevice, stopAgents } from '../src/demo/fleet.ts';
import type { DeviceSummary } from '../src/server/routes/admin-fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { checkinsSeen, fleetUntil, importGoodAndBadContent, startAgentFleet } from './helpers/agent-fleet.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const PLAN = `name: e2e
first_wave_cap: 100%
report_deadline: 60s
waves:
  - name: canary
    select: ring=canary
    size: 2
    bake: 500ms
  - name: rest
    size: 100%
    max_failures: 1
`;

describe('end to end with real agents', { timeout: 400_000 }, () => {
  let ts: TestServer;
  const devices: SpawnedDevice[] = [];
  const N = 6;

  before(async () => {
    ts = await startTestServer();
    const spec = (i: number): DeviceSpec => ({
      name: `dev-${i}`,
      labels: i < 2 ? { ring: 'canary', tier: 'C' } : { tier: 'B' },
    });
    devices.push(...(await startAgentFleet(ts, N, spec)));
    await fleetUntil(ts, (l) => l.length === N, 90_000, 'enrollment');
    await importGoodAndBadContent(ts);
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });
  });

  after(async () => {
    await stopAgents(devices);
    await ts.close();
  });

  const active = (d: SpawnedDevice) => {
    try {
      return readlinkSync(join(d.appDir, 'current')).split('/').pop();
    } catch {
      return null;
    }
  };

  /** Approves sensor-content@VERSION and starts its rollout with the e2e plan. */
  const approveAndRollOut = async (version: string) => {
    await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${version}/approve`, {});
    return api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: `sensor-content@${version}`,
      plan: 'e2e',
    });
  };

  it('refuses to roll out an unapproved release', async () => {
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'sensor-content@1.0.0', plan: 'e2e' }),
      /409 release sensor-content@1.0.0 is not approved/,
    );
  });

  it('rolls a good release through both waves to every device', async () => {
    const r = await approveAndRollOut('1.0.0');
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => ['completed', 'halted'].includes(v.status),
      90_000,
      'good rollout',
    );
    assert.equal(end.status, 'completed');
    assert.deepEqual(
      end.waves.map((w) => [w.name, w.selected, w.succeeded]),
      [
        ['canary', 2, 2],
        ['rest', 4, 4],
      ],
    );
    for (const d of devices) assert.equal(active(d), '1.0.0', `${d.name} runs ${active(d)}`);
  });

  it('halts a bad release after the first wave; exposed devices roll back, others never see it', async () => {
    const r = await approveAndRollOut('2.0.0');
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => v.status === 'halted' && v.waves[0].failed === v.waves[0].offered,
      90_000,
      'bad rollout halt',
    );
    assert.equal(end.state.haltedAtWave, 0);
    assert.equal(end.exposed, 2);
    assert.equal(end.waves[1].selected, 0);
    // Give any stray offer time to arrive (two more check-ins from every device), then check the devices.
    await Promise.all(devices.map((d) => checkinsSeen(ts, d, 2)));
    for (const d of devices) {
      assert.equal(active(d), '1.0.0', `${d.name} must be back on / still on 1.0.0`);
      const sawBad = existsSync(join(d.appDir, 'releases', '2.0.0'));
      if (!d.labels.ring) assert.ok(!sawBad, `${d.name} outside the first wave received 2.0.0`);
    }
    const canary = await api<DeviceSummary>(ts.conn, 'GET', '/v1/admin/devices/dev-0');
    assert.deepEqual(canary.components[0].quarantined, ['2.0.0']);
    const audit = await api<{ ok: boolean; entries: number }>(ts.conn, 'GET', '/v1/admin/audit/verify');
    assert.ok(audit.ok && audit.entries > 10);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
