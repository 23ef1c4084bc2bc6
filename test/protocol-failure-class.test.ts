// "Retryable" is decided by the failure's class, never by words in its reason: a health check whose output
// mentions the network is a health failure (not retried); a download failure is retried. Unit-level over the
// engine and the protocol, and end to end over the device protocol and the admin API.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { writeContent } from '../src/demo/fleet.ts';
import { type Assignment, applyReport } from '../src/engine/rollout.ts';
import { isRetryableFailure } from '../src/engine/rollout-state.ts';
import { componentState, componentStatus } from '../src/protocol/component-state.ts';
import { classOnWire, isRetryable, legacyClass } from '../src/protocol/failure-class.ts';
import type { DeviceSummary } from '../src/server/routes/admin-fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { deviceWants } from '../src/server/services/device-wants.ts';
import { checkin, enrollDevices, type ProtocolDevice } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const NETWORKY = 'probe said: network unreachable (ECONNREFUSED), timed out';

const offered: Assignment = {
  deviceId: 'd',
  wave: 0,
  state: 'offered',
  fromVersion: '1',
  offeredAt: 0,
  reportedAt: null,
  reason: null,
};

describe('failure classes decide retries', () => {
  it('a health failure that mentions the network is not retryable; a download failure is', () => {
    const health = applyReport(offered, {
      outcome: 'failed',
      version: '2',
      target: '2',
      reason: `health: ${NETWORKY}`,
      failureClass: 'health',
      at: 1,
    });
    const download = applyReport(offered, {
      outcome: 'failed',
      version: '2',
      target: '2',
      reason: 'download: connection reset',
      failureClass: 'download',
      at: 1,
    });
    assert.equal(health?.failureClass, 'health');
    assert.equal(isRetryableFailure(health!), false);
    assert.equal(download?.failureClass, 'download');
    assert.equal(isRetryableFailure(download!), true);
  });

  it('reads the class of a legacy reason from its prefix only, and calls the rest unknown', () => {
    assert.equal(legacyClass(`health: ${NETWORKY}`), 'health');
    assert.equal(legacyClass('download: connection reset'), 'download');
    assert.equal(legacyClass('no report before the deadline'), 'no-report');
    assert.equal(legacyClass(NETWORKY), 'unknown');
    assert.equal(legacyClass('failure: network down'), 'unknown');
    assert.equal(legacyClass('vendor-unavailable: no source'), 'vendor-unavailable');
    assert.equal(isRetryableFailure({ reason: `health: ${NETWORKY}` }), false);
    assert.equal(isRetryableFailure({ reason: NETWORKY }), false);
    assert.equal(isRetryableFailure({ reason: 'timeout: download took too long' }), true);
    // The recorded class wins over whatever the text says.
    assert.equal(isRetryableFailure({ failureClass: 'health', reason: 'download: reset' }), false);
    assert.equal(isRetryableFailure({ failureClass: 'download', reason: 'health: failed' }), true);
    for (const c of ['download', 'timeout', 'unreachable', 'no-report'] as const)
      assert.equal(isRetryable(c), true);
    for (const c of ['health', 'crash-loop', 'verify', 'invalid', 'unknown', 'signature'] as const)
      assert.equal(isRetryable(c), false);
  });

  it('separates the transaction phase from the hold and the pin, and reads the older one-word state', () => {
    assert.deepEqual(componentStatus({ name: 'a', phase: 'probation', hold: true, pin: '1' }), {
      phase: 'probation',
      hold: true,
      pinned: true,
    });
    assert.equal(
      componentState(componentStatus({ name: 'a', phase: null, hold: false, pin: '1' })),
      'pinned',
    );
    assert.equal(componentState(componentStatus({ name: 'a', state: 'held' })), 'held');
    assert.equal(componentState(componentStatus({ name: 'a', state: 'activating' })), 'activating');
    assert.equal(componentState(componentStatus({ name: 'a', state: 'weird' })), 'idle');
    assert.equal(componentState(componentStatus({ name: 'a' })), 'idle');
  });

  it('pins win over rollouts; a hold freezes the device as it is', () => {
    const desired = new Map([
      ['app', '2'],
      ['os', '5'],
    ]);
    const current = new Map<string, string | null>([
      ['app', '1'],
      ['os', '5'],
      ['cfg', '3'],
    ]);
    const free = deviceWants({ desired, pins: { app: '1.5' }, held: false, current });
    assert.deepEqual(
      [...free],
      [
        ['app', '1.5'],
        ['os', '5'],
      ],
    );
    const held = deviceWants({ desired, pins: { cfg: '4' }, held: true, current });
    assert.deepEqual([...held], [['os', '5']], 'only what it runs already stays desired');
  });
});

describe('retry over the device protocol: by class, not by prose', { timeout: 60_000 }, () => {
  let ts: TestServer;
  let devs: ProtocolDevice[];
  const C = 'sensor-content';

  before(async () => {
    ts = await startTestServer();
    devs = await enrollDevices(ts.conn, [{}, {}, {}], C, '1.0.0');
    await importRelease(ts.conn, C, '2.0.0', [writeContent(join(ts.dir, 'c2'), '2.0.0', 0)]);
    await api(ts.conn, 'POST', `/v1/admin/releases/${C}@2.0.0/approve`, {});
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: fc\nfirst_wave_cap: 100%\nreport_deadline: 10m\nwaves:\n  - { name: all, size: 100%, max_failures: 1 }\n',
    });
  });
  after(() => ts.close());

  it('re-offers the download failure and not the health failure whose output mentions the network', async () => {
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: `${C}@2.0.0`,
      plan: 'fc',
    });
    for (const d of devs)
      await until(
        () => checkin(ts.conn, d, C),
        (offers) => offers.some((o) => o.version === '2.0.0'),
        10_000,
        'offer',
      );
    const [a, b, c] = devs;
    const report = (cls: string | undefined, reason: string | undefined, outcome = 'failed') => ({
      txn_id: `t-${Math.random().toString(36).slice(2)}`,
      component: C,
      version: '2.0.0',
      from_version: '1.0.0',
      outcome,
      ...(cls ? { class: cls } : {}),
      ...(reason ? { reason } : {}),
    });
    await checkin(ts.conn, a, C, [report('download', 'connection reset by peer')]);
    await checkin(ts.conn, b, C, [report('health', NETWORKY)]);
    await checkin(ts.conn, c, C, [report(undefined, undefined, 'succeeded')]);
    await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => v.status === 'halted',
      10_000,
      'halt',
    );
    const retried = await api<RolloutView>(ts.conn, 'POST', `/v1/admin/rollouts/${r.id}/retry`, {});
    assert.equal(retried.status, 'running');
    const rows = await ts.srv.ctx.store.db
      .selectFrom('assignments')
      .select(['device_id', 'state', 'reason'])
      .where('rollout_id', '=', r.id)
      .execute();
    const state = new Map(rows.map((x) => [x.device_id, x.state]));
    assert.notEqual(state.get(a.id), 'failed', 'the download failure is queued or offered again');
    assert.equal(state.get(b.id), 'failed', 'the health failure is not, whatever its output says');
    assert.equal(rows.find((x) => x.device_id === b.id)?.reason, `health: ${NETWORKY}`);
    const toA = await checkin(ts.conn, a, C);
    assert.ok(
      toA.some((o) => o.version === '2.0.0'),
      'the download failure is offered again',
    );
  });

  it('keeps nulls null and shows the phase, hold and pin as one state', async () => {
    const send = (comp: Record<string, unknown>) =>
      fetch(new URL('/v1/checkin', ts.conn.server), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${devs[2].token}` },
        body: JSON.stringify({ components: [{ name: 'other', ...comp }] }),
      });
    const shown = async () => {
      const d = await api<DeviceSummary>(ts.conn, 'GET', `/v1/admin/devices/${devs[2].id}`);
      return d.components.find((x) => x.name === 'other');
    };
    assert.equal((await send({ version: null, phase: null, hold: false, pin: null })).status, 200);
    assert.deepEqual(await shown().then((c) => [c?.version, c?.state]), [null, 'idle']);
    assert.equal((await send({ version: '1', phase: 'probation', hold: true, pin: '1' })).status, 200);
    assert.equal((await shown())?.state, 'probation');
    assert.equal((await send({ version: '1', phase: null, hold: false, pin: '1' })).status, 200);
    assert.equal((await shown())?.state, 'pinned');
    assert.equal((await send({ version: '1', state: 'held' })).status, 200, 'the older one-word form');
    assert.equal((await shown())?.state, 'held');
    assert.equal((await send({ version: '1', phase: 'sleeping' })).status, 400);
  });

  it('records a class it does not know as unknown instead of refusing the check-in; refuses one not shaped like a class', async () => {
    const send = (cls: string, txn: string) =>
      fetch(new URL('/v1/checkin', ts.conn.server), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${devs[0].token}` },
        body: JSON.stringify({
          components: [{ name: C, version: '1.0.0', phase: null }],
          reports: [{ txn_id: txn, component: C, version: '2.0.0', outcome: 'refused', class: cls }],
        }),
      });
    // A newer agent's class: refusing it would keep the report in the device's outbox and block its check-ins.
    assert.equal((await send('quantum-flux', 'txn-newer-class')).status, 200);
    const stored = await ts.srv.ctx.store.db
      .selectFrom('reports')
      .select('detail')
      .where('txn_id', '=', 'txn-newer-class')
      .executeTakeFirstOrThrow();
    assert.equal(JSON.parse(stored.detail).class, 'unknown');
    assert.equal(isRetryable(classOnWire('quantum-flux')), false);
    assert.equal(classOnWire('download'), 'download');
    assert.equal(classOnWire('vendor-expired'), 'vendor-expired');
    for (const bad of ['Network', 'a'.repeat(40), 'net work', '-x', 'x\u001b[31m'])
      assert.equal((await send(bad, `txn-bad-${bad.length}`)).status, 400, bad);
  });
});
