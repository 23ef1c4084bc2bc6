// The issue's own scenario with real agent processes: each device measures `restarts` with an exec source (a
// shell command in its agent.yaml) that reads the running release's config; release GOOD doubles the value and
// passes every health check. Under a comparison gate the rollout halts after its canary, with no device failed;
// the same release, on the same agents, under a failure budget alone, reaches every device.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import type { SpawnedDevice } from '../src/demo/fleet.ts';
import { signalSamples } from '../src/server/db/device-signals.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { enrollToken, GOOD, publishReleases, seededDevice, start, waitEnrolled } from './agent-harness.ts';
import { killTracked } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const COMPONENT = 'sensor-content';
const N = 20;

const plan = (name: string, compare: boolean) => `name: ${name}
first_wave_cap: 100%
report_deadline: 2m
waves:
  - name: canary
    size: 10
    bake: 10s
    max_failures: 0
${
  compare
    ? `    compare:
      min_samples: 8
      signals:
        - name: restarts
          critical: true
`
    : ''
}  - name: rest
    size: 100%
`;

describe('evidence gates with real agents', { timeout: 600_000 }, () => {
  let ts: TestServer;
  const devices: SpawnedDevice[] = [];

  before(async () => {
    ts = await startTestServer();
    const content = await publishReleases(ts);
    for (const p of [plan('compared', true), plan('budget-only', false)])
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: p });
    const token = await enrollToken(ts, N);
    for (let i = 0; i < N; i++) {
      // restarts = the device's own base (5, 6 or 7) × the release's threads (4 in OLD, 8 in GOOD).
      const base = 5 + (i % 3);
      const d = seededDevice(ts, content, `ev-${i}`, token, {
        edit: (cfg) => {
          const [comp] = cfg.components as Array<Record<string, unknown>>;
          const conf = join(ts.dir, 'devices', `ev-${i}`, 'app', 'current', 'service.conf');
          comp.signals = {
            interval: '5s',
            sources: [
              {
                exec: `echo "restarts=$(( ${base} * $(sed -n 's/^threads=//p' ${conf}) ))"`,
                names: ['restarts'],
              },
            ],
          };
        },
      });
      devices.push(d);
      start(d);
    }
    for (const d of devices) await waitEnrolled(ts, d);
  });

  after(async () => {
    await killTracked();
    await ts?.close();
  });

  const rollout = (id: number) => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`);

  it('samples nothing while no evidence gate compares the component', async () => {
    // An agent samples at its first check-in (it does not know yet what the server compares); the answers then
    // say `signals_wanted: []`, and no later sample arrives though the interval (5 s) passes twice.
    const db = ts.srv.ctx.store.db;
    const first = await until(
      () => signalSamples(db, COMPONENT, 0),
      (rows) => rows.length === N,
      120_000,
      'the first samples',
    );
    const seen = new Map(first.map((r) => [r.deviceId, r.receivedAt]));
    const t0 = Date.now();
    await until(
      async () => Date.now() - t0,
      (ms) => ms > 11_000,
      20_000,
      'two sample intervals',
    );
    const later = await signalSamples(db, COMPONENT, 0);
    assert.equal(later.length, N);
    for (const r of later)
      assert.equal(r.receivedAt, seen.get(r.deviceId), `${r.deviceId} sent another sample`);
  });

  it('halts a release that doubles a signal, which the failure budget alone lets through', async () => {
    // Every agent has reported a sample of OLD (4 × base: 20, 24 or 28).
    await until(
      () => api<Array<{ id: string }>>(ts.conn, 'GET', '/v1/admin/devices'),
      (list) => list.length === N,
      120_000,
      'every device listed',
    );
    const gated = (
      await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: `${COMPONENT}@${GOOD}`,
        plan: 'compared',
      })
    ).id;
    const r = await until(
      () => rollout(gated),
      (x) => x.status === 'halted' || x.status === 'completed',
      180_000,
      'the gated rollout halts',
    );
    assert.equal(r.status, 'halted', r.state.reason ?? '');
    assert.match(r.state.reason ?? '', /wave canary: evidence gate fail: restarts fail \(p=/);
    assert.equal(r.waves[0].failed, 0, 'every device passed its health checks');
    assert.equal(r.waves[0].succeeded, 10);
    assert.equal(r.exposed, 10, 'the rest of the fleet never saw it');
    const look = r.evidence.find((e) => e.signal === 'restarts');
    assert.ok(look);
    assert.equal(look.n_treatment, 10);
    assert.equal(look.n_control, 10);
    assert.equal(look.effect, 1, 'every updated device restarts more than every other');

    // The same release on the same agents, judged by its failure budget alone: it reaches every device.
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${gated}/abort`, { reason: 'test: try the budget alone' });
    const plain = (
      await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: `${COMPONENT}@${GOOD}`,
        plan: 'budget-only',
      })
    ).id;
    const p = await until(
      () => rollout(plain),
      (x) => x.status === 'halted' || x.status === 'completed',
      180_000,
      'the budget-only rollout ends',
    );
    assert.equal(p.status, 'completed', p.state.reason ?? '');
    assert.equal(
      p.waves.reduce((n, w) => n + w.failed, 0),
      0,
    );
  });
});
