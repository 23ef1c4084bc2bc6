// Fleet controls that always win, on a real server over HTTP: deferral, channels (early → general promotion),
// explicit supersede, and the device's own hold.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import type { AuditEntry } from '../src/server/db/audit.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { checkin, cycle, enrollDevices, type ProtocolDevice, release } from './helpers/protocol-device.ts';
import { sleep, startTestServer, type TestServer, until } from './helpers/server.ts';

const ALL = 'name: all\nfirst_wave_cap: 100%\nwaves:\n  - name: everyone\n    size: 100%\n';

describe('fleet controls', () => {
  let ts: TestServer;
  const status = (id: number) => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`);

  before(async () => {
    ts = await startTestServer();
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: ALL });
  });
  after(() => ts.close());

  it('a deferred device is offered nothing until its deferral ends, and is not failed for waiting', async () => {
    const devs = await enrollDevices(ts.conn, [{ grp: 'defer' }, { grp: 'defer' }], 'dfr');
    await release(ts.conn, 'dfr', '1');
    const untilMs = Date.now() + 1500;
    await api(ts.conn, 'POST', '/v1/admin/fleet/defer', { selector: `id=${devs[0].id}`, until: untilMs });
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'dfr@1',
      plan: 'all',
    });
    assert.equal(await cycle(ts.conn, devs[1], 'dfr'), '1');
    assert.deepEqual(await checkin(ts.conn, devs[0], 'dfr'), [], 'deferred device is offered nothing');
    await sleep(Math.max(0, untilMs - Date.now()) + 400);
    await until(
      () => checkin(ts.conn, devs[0], 'dfr'),
      (o) => o.length === 1,
      120_000,
      'offer after deferral',
    );
    await cycle(ts.conn, devs[0], 'dfr');
    const end = await until(
      () => status(r.id),
      (v) => v.status === 'completed',
      120_000,
      'completion',
    );
    assert.equal(end.waves[0].failed, 0);
  });

  it('the general channel gets a release only after it completed on the early channel (or a forced, audited promotion)', async () => {
    const devs = await enrollDevices(ts.conn, [{ grp: 'ch' }, { grp: 'ch' }, { grp: 'ch' }], 'chn');
    await api(ts.conn, 'POST', '/v1/admin/fleet/channel', { selector: `id=${devs[0].id}`, channel: 'early' });
    await release(ts.conn, 'chn', '1');
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'chn@1', plan: 'all', channel: 'general' }),
      /409 chn@1 has not completed on the early channel/,
    );
    const early = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'chn@1',
      plan: 'all',
      channel: 'early',
    });
    assert.equal(early.channel, 'early');
    assert.deepEqual(
      await checkin(ts.conn, devs[1], 'chn'),
      [],
      'general devices are outside an early rollout',
    );
    await cycle(ts.conn, devs[0], 'chn');
    await until(
      () => status(early.id),
      (v) => v.status === 'completed',
      120_000,
      'early completion',
    );
    const general = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'chn@1',
      plan: 'all',
      channel: 'general',
    });
    assert.equal(general.waves[0].selected, 2, 'the two general devices of this test');
    // The deferral test's devices are general too, but do not run chn: never offered, shown as skipped.
    assert.equal(general.waves[0].skipped, 2);
    await release(ts.conn, 'chn2', '1');
    const forced = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'chn2@1',
      plan: 'all',
      channel: 'general',
      force: true,
      reason: 'security fix',
    });
    const log = await api<AuditEntry[]>(ts.conn, 'GET', `/v1/admin/audit?subject=rollout/${forced.id}`);
    const created = log.find((e) => e.action === 'rollout.created')!;
    assert.equal((created.detail as { force_promote: boolean }).force_promote, true);
  });

  it('a newer rollout supersedes an active one only by explicit operator action', async () => {
    await enrollDevices(ts.conn, [{ grp: 'sup' }, { grp: 'sup' }], 'sup');
    await release(ts.conn, 'sup', '1');
    await release(ts.conn, 'sup', '2');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: slow\nfirst_wave_cap: 100%\nwaves:\n  - name: one\n    size: 1\n    bake: 1h\n  - name: rest\n    size: 100%\n',
    });
    const first = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sup@1',
      plan: 'slow',
    });
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'sup@2', plan: 'slow' }),
      /409 rollout \d+ of sup@1 is still active/,
    );
    // A supersede that would be refused (unknown plan, unapproved release) must not abort the running rollout.
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'sup@2', plan: 'nope', supersede: true }),
      /404 no plan "nope"/,
    );
    await assert.rejects(
      api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'sup@9', plan: 'slow', supersede: true }),
      /404 no release sup@9/,
    );
    assert.notEqual((await status(first.id)).status, 'aborted');
    const second = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sup@2',
      plan: 'slow',
      supersede: true,
    });
    assert.equal((await status(first.id)).status, 'aborted');
    assert.match((await status(first.id)).state.reason ?? '', /superseded by sup@2/);
    assert.equal(second.status, 'running');
  });

  it("a device's own hold keeps it out of a rollout", async () => {
    const devs: ProtocolDevice[] = await enrollDevices(ts.conn, [{ grp: 'lh' }, { grp: 'lh' }]);
    devs[0].state = 'held';
    await checkin(ts.conn, devs[0], 'lh');
    await checkin(ts.conn, devs[1], 'lh');
    await release(ts.conn, 'lh', '1');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: 'name: lh\nfirst_wave_cap: 100%\nwaves:\n  - name: w\n    select: grp=lh\n    size: 100%\n',
    });
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'lh@1', plan: 'lh' });
    assert.equal(r.waves[0].selected, 1);
    assert.deepEqual(await checkin(ts.conn, devs[0], 'lh'), []);
  });
});

describe('a pin skips every wave: a non-admin may pin only a few devices at once', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ governance: { pinMaxDevices: 2 } });
  });
  after(() => ts.close());

  it('an operator pinning more than governance.pin_max_devices gets 403 and nothing is pinned; an admin may', async () => {
    const devs = await enrollDevices(ts.conn, [{ g: 'pin' }, { g: 'pin' }, { g: 'pin' }], 'pinned', '1');
    await release(ts.conn, 'pinned', '2');
    const op = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/operators', {
      name: 'olga',
      role: 'operator',
    });
    const olga = { ...ts.conn, token: op.token };
    await assert.rejects(
      api(olga, 'POST', '/v1/admin/fleet/pin', { selector: 'g=pin', release: 'pinned@2' }),
      /403 pinning 3 devices at once needs role admin \(governance\.pin_max_devices: 2\)/,
    );
    for (const d of devs) {
      const wants = await checkin(ts.conn, d, 'pinned');
      assert.ok(!wants.some((w) => w.version === '2'), `${d.name} was not offered the pinned release`);
    }
    // Within the limit the operator may; an admin may pin any number.
    await api(olga, 'POST', '/v1/admin/fleet/pin', { selector: `id=${devs[0].id}`, release: 'pinned@2' });
    const all = await api<{ devices: string[] }>(ts.conn, 'POST', '/v1/admin/fleet/pin', {
      selector: 'g=pin',
      release: 'pinned@2',
    });
    assert.equal(all.devices.length, 3);
  });
});
