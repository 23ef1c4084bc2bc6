// A failed rollout closes: devices that roll a bad release back by themselves confirm the revert by being seen
// back on their previous release, so a halt-and-rollback ends within seconds even with a 30-minute report
// deadline; operator actions that cannot apply say so; wave counts never flip.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { type DeviceSpec, type SpawnedDevice, stopAgents } from '../src/demo/fleet.ts';
import type { AuditEntry } from '../src/server/db/audit.ts';
import type { DeviceSummary } from '../src/server/routes/admin-fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import {
  activeRelease,
  enrollToken,
  GOOD,
  kill,
  OLD,
  pausedAt,
  publishReleases,
  report,
  ringfence,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { fleetUntil, importGoodAndBadContent, startAgentFleet } from './helpers/agent-fleet.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const PLAN = `name: lifecycle
first_wave_cap: 100%
report_deadline: 30m
on_failure: halt-and-rollback
waves:
  - name: canary
    select: ring=canary
    size: 2
    bake: 30m
  - name: rest
    size: 100%
`;

describe('a halt-and-rollback closes on observed state', { timeout: 480_000 }, () => {
  let ts: TestServer;
  const devices: SpawnedDevice[] = [];
  const N = 4;

  before(async () => {
    ts = await startTestServer();
    const spec = (i: number): DeviceSpec => ({
      name: `lc-${i}`,
      labels: i < 2 ? { ring: 'canary' } : { ring: 'broad' },
    });
    devices.push(...(await startAgentFleet(ts, N, spec)));
    await fleetUntil(
      ts,
      (l) => l.length === N && l.every((d) => d.components.length === 1),
      120_000,
      'enrollment and first check-in',
    );
    await importGoodAndBadContent(ts);
    for (const v of ['1.0.0', '2.0.0'])
      await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${v}/approve`, {});
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });
    // Everyone on 1.0.0 first (pinned), so the bad release has a previous release to go back to.
    await api(ts.conn, 'POST', '/v1/admin/fleet/pin', { selector: '*', release: 'sensor-content@1.0.0' });
    await fleetUntil(
      ts,
      (l) => l.every((d) => d.components[0]?.version === '1.0.0' && d.components[0].state === 'idle'),
      120_000,
      'every device on 1.0.0',
    );
    await api(ts.conn, 'POST', '/v1/admin/fleet/unpin', { selector: '*', component: 'sensor-content' });
  });

  after(async () => {
    await stopAgents(devices);
    await ts.close();
  });

  it('ends rolled-back within 5 s of the last exposed device rolling back by itself', async () => {
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@2.0.0',
      plan: 'lifecycle',
    });
    const seen: string[] = [];
    const end = await until(
      async () => {
        const v = await api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`);
        const w = v.waves[0];
        seen.push(`${v.status} f${w.failed} rb${w.rolled_back} rv${w.reverted}`);
        return v;
      },
      (v) => v.status === 'rolled-back',
      90_000,
      'the rollout to close',
    );
    // The devices' own rollbacks, as the server received them.
    const audit = await api<AuditEntry[]>(ts.conn, 'GET', '/v1/admin/audit?limit=1000');
    const rollbacks = audit.filter((e) => e.action === 'device.rolled-back');
    // The first canary's own rollback halts the wave; the second either rolled back by itself too, or was
    // reverted by the rollout before or after it switched.
    assert.ok(rollbacks.length >= 1, 'a canary rolled back by itself');
    const last = Math.max(...rollbacks.map((e) => e.at));
    const closedAt = end.state.finishedAt ?? 0;
    assert.ok(closedAt - last <= 5000, `closed ${closedAt - last} ms after the last device's own rollback`);
    assert.doesNotMatch(end.state.reason ?? '', /did not confirm/);
    // Counts mean one thing each and never flipped on the way.
    const w = end.waves[0];
    assert.equal(w.offered, 2);
    assert.equal(w.rolled_back, rollbacks.length);
    assert.ok(w.failed >= w.rolled_back);
    assert.equal(w.rolled_back + w.reverted, 2, 'every exposed device is back, each counted once');
    assert.equal(w.unconfirmed, 0);
    for (const d of devices.slice(0, 2)) {
      const dev = await api<DeviceSummary>(ts.conn, 'GET', `/v1/admin/devices/${d.name}`);
      assert.equal(dev.components[0].version, '1.0.0', `${d.name} back on 1.0.0`);
    }
    for (const s of seen) assert.match(s, /f(0|1|2) /);
    const failedSeq = seen.map((s) => Number(/ f(\d)/.exec(s)?.[1]));
    assert.deepEqual(
      failedSeq,
      [...failedSeq].sort((a, b) => a - b),
      `failed count never goes down: ${seen.join(' | ')}`,
    );
    assert.equal(end.waves[1].offered, 0, 'the rest never saw it');
  });

  it('refuses operator actions that cannot apply, naming the state (and a new rollout starts)', async () => {
    const list = await api<RolloutView[]>(ts.conn, 'GET', '/v1/admin/rollouts');
    const done = list.at(-1)!;
    for (const action of ['pause', 'resume', 'abort', 'approve']) {
      await assert.rejects(
        api(ts.conn, 'POST', `/v1/admin/rollouts/${done.id}/${action}`, {}),
        new RegExp(`409 rollout ${done.id}: cannot ${action} a rollout that is rolled-back`),
      );
    }
    const next = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@1.0.0',
      plan: 'lifecycle',
    });
    assert.notEqual(next.status, 'rolled-back');
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${next.id}/abort`, { reason: 'test over' });
  });
});

describe('a crash loop under a supervisor closes the rollout too', { timeout: 480_000 }, () => {
  let ts: TestServer;
  let d: SpawnedDevice;
  before(async () => {
    ts = await startTestServer();
  });
  after(async () => {
    if (d) await kill(d);
    await ts.close();
  });

  it('is rolled-back within 5 s of the boot guard rolling the device back (30-minute report deadline)', async () => {
    const content = await publishReleases(ts);
    d = seededDevice(ts, content, 'looper', await enrollToken(ts, 1));
    start(d, 'probation');
    const id = await waitEnrolled(ts, d);
    await until(
      () => api<DeviceSummary>(ts.conn, 'GET', `/v1/admin/devices/${id}`),
      (v) => v.components[0]?.version === OLD,
      120_000,
      'the device reporting its component',
    );
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: `name: loop\nreport_deadline: 30m\non_failure: halt-and-rollback\nwaves:\n  - name: one\n    select: dev=looper\n    size: 1\n    bake: 30m\n`,
    });
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: `sensor-content@${GOOD}`,
      plan: 'loop',
    });
    // The machine dies on probation, three boots in a row; the boot guard (run by the supervisor before the
    // service) rolls it back on the third, with no server and no person.
    await pausedAt(d, 'probation');
    for (let boot = 1; boot <= 3; boot++) {
      await kill(d);
      const g = ringfence(['agent', 'boot-guard', '--config', d.config]);
      assert.equal(g.code, 0, g.out);
      if (boot < 3) {
        start(d, 'probation');
        await pausedAt(d, 'probation');
      }
    }
    assert.equal(activeRelease(d), OLD);
    start(d); // the service is back; the agent reports the crash-loop rollback
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => v.status === 'rolled-back',
      60_000,
      'the rollout to close',
    );
    const [rep] = (await report(ts, id, GOOD)).filter((x) => x.outcome === 'rolled-back');
    assert.equal(JSON.parse(rep.detail).class, 'crash-loop');
    const closedAt = end.state.finishedAt ?? 0;
    assert.ok(closedAt - rep.received_at <= 5000, `closed ${closedAt - rep.received_at} ms after the report`);
    assert.deepEqual(
      [end.waves[0].offered, end.waves[0].failed, end.waves[0].rolled_back, end.waves[0].unconfirmed],
      [1, 1, 1, 0],
    );
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
