// Batched check-ins (group commit): concurrent check-ins share a transaction without mixing up answers,
// an unknown token in a batch is refused alone, and reports in a batch are applied exactly once.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import type { DeviceSummary } from '../src/server/routes/admin-fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { checkin, enrollDevices, type ProtocolDevice, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

describe('batched check-ins', () => {
  let ts: TestServer;
  let devs: ProtocolDevice[];

  before(async () => {
    ts = await startTestServer();
    devs = await enrollDevices(
      ts.conn,
      Array.from({ length: 40 }, (_, i) => ({ half: i < 20 ? 'a' : 'b' })),
      'bt',
    );
  });
  after(() => ts.close());

  it('answers each of many concurrent check-ins with its own desired releases; a bad token fails alone', async () => {
    await release(ts.conn, 'bt', '1');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: 'name: half\nfirst_wave_cap: 100%\nwaves:\n  - name: a\n    select: half=a\n    size: 100%\n',
    });
    await api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'bt@1', plan: 'half' });
    const bad = fetch(new URL('/v1/checkin', ts.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer rfdev_nope' },
      body: JSON.stringify({ components: [] }),
    });
    const [badRes, ...answers] = await Promise.all([bad, ...devs.map((d) => checkin(ts.conn, d, 'bt'))]);
    assert.equal(badRes.status, 401);
    answers.forEach((offers, i) => {
      assert.deepEqual(
        offers.map((o) => o.version),
        i < 20 ? ['1'] : [],
        `device ${i} got the wrong answer`,
      );
    });
    const listed = await api<DeviceSummary[]>(ts.conn, 'GET', '/v1/admin/devices');
    assert.ok(listed.every((d) => d.components.some((c) => c.name === 'bt')));
  });

  it('applies reports sent concurrently, and retransmitted in the same batch, exactly once', async () => {
    const first = devs.slice(0, 20);
    const reports = first.map((_d, i) => ({
      txn_id: `bt-${i}`,
      component: 'bt',
      version: '1',
      outcome: 'succeeded',
    }));
    await Promise.all(
      first.flatMap((d, i) => {
        d.version = '1';
        return [checkin(ts.conn, d, 'bt', [reports[i]]), checkin(ts.conn, d, 'bt', [reports[i]])];
      }),
    );
    const r = await until(
      () => api<RolloutView[]>(ts.conn, 'GET', '/v1/admin/rollouts'),
      (l) => l[0].status === 'completed',
      120_000,
      'completion',
    );
    assert.equal(r[0].waves[0].succeeded, 20);
    const rows = await ts.srv.ctx.store.db
      .selectFrom('reports')
      .select('txn_id')
      .where('txn_id', 'like', 'bt-%')
      .execute();
    assert.equal(rows.length, 20, 'one stored report per transaction id');
    const audit = await api<{ ok: boolean }>(ts.conn, 'GET', '/v1/admin/audit/verify');
    assert.ok(audit.ok);
  });
});
