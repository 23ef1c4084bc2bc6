// The same server on PostgreSQL: migrations, enrollment, check-ins over real HTTP, a rollout stepped under
// row locks, idempotent reports and the audit chain — one query layer, the second dialect.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { api } from '../src/cli/client.ts';
import { inTransaction, openStore } from '../src/server/db/database.ts';
import { getMeta, initMeta, setMeta } from '../src/server/db/meta.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const skip = pgBinDir() ? false : 'PostgreSQL is not installed (CI installs it)';

describe('PostgreSQL dialect', { skip, timeout: 300_000 }, () => {
  let pg: PgCluster;
  let ts: TestServer;

  before(async () => {
    pg = await startPostgres();
    ts = await startTestServer({ databaseUrl: pg.url });
  });
  after(async () => {
    await ts?.close();
    pg?.stop();
  });

  it('migrates idempotently', async () => {
    const again = await openStore({ dataDir: ts.dir, url: pg.url });
    assert.equal(again.dialect, 'postgres');
    await again.close();
  });

  it('runs a rollout with devices checking in over HTTP, reports applied exactly once', async () => {
    const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: 4 });
    const devices: Array<{ id: string; token: string }> = [];
    for (let i = 0; i < 4; i++) {
      const r = await fetch(new URL('/v1/enroll', ts.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          token: tok.token,
          name: `pg-${i}`,
          labels: { ring: i === 0 ? 'canary' : 'main' },
        }),
      });
      const b = (await r.json()) as { device_id: string; device_token: string };
      devices.push({ id: b.device_id, token: b.device_token });
    }
    const up = await fetch(new URL('/v1/admin/blobs', ts.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/octet-stream' },
      body: 'threads=4\n',
    });
    const blob = (await up.json()) as { sha256: string; length: number };
    await api(ts.conn, 'POST', '/v1/admin/releases', {
      component: 'cfg',
      version: '1',
      artifacts: [{ name: 'a.conf', ...blob }],
    });
    await api(ts.conn, 'POST', '/v1/admin/releases/cfg@1/approve', {});
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: pg\nfirst_wave_cap: 100%\nwaves:\n  - name: canary\n    select: ring=canary\n    size: 1\n  - name: rest\n    size: 100%\n',
    });
    const checkin = async (d: { id: string; token: string }, reports: unknown[] = []) => {
      const r = await fetch(new URL('/v1/checkin', ts.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
        body: JSON.stringify({ components: [{ name: 'cfg', version: null, state: 'idle' }], reports }),
      });
      return (await r.json()) as { desired: Array<{ component: string; version: string }> };
    };
    // Every device reports the component first, as a freshly started agent does (rollouts offer only to those).
    for (const d of devices) await checkin(d);
    const ro = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'cfg@1',
      plan: 'pg',
    });
    // Only the canary is offered first; the others are told nothing.
    assert.deepEqual(
      (await checkin(devices[0])).desired.map((d) => d.version),
      ['1'],
    );
    assert.deepEqual((await checkin(devices[1])).desired, []);
    const report = { txn_id: 'txn-pg-0', component: 'cfg', version: '1', outcome: 'succeeded' };
    await checkin(devices[0], [report]);
    await checkin(devices[0], [report]); // a retransmission must not count twice
    const mid = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${ro.id}`),
      (r) => r.wave === 'rest',
      120_000,
      'second wave',
    );
    assert.equal(mid.waves[0].succeeded, 1);
    for (const [i, d] of devices.slice(1).entries()) {
      assert.deepEqual(
        (await checkin(d)).desired.map((x) => x.version),
        ['1'],
      );
      await checkin(d, [{ txn_id: `txn-pg-${i + 1}`, component: 'cfg', version: '1', outcome: 'succeeded' }]);
    }
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${ro.id}`),
      (r) => r.status === 'completed',
      120_000,
      'completion',
    );
    assert.equal(end.exposed, 4);
    const audit = await api<{ ok: boolean }>(ts.conn, 'GET', '/v1/admin/audit/verify');
    assert.ok(audit.ok);
  });

  it('runs a transaction again when PostgreSQL aborts it to break a deadlock', async () => {
    const store = await openStore({ dataDir: ts.dir, url: pg.url });
    try {
      await initMeta(store.db, 'deadlock-a', '-');
      await initMeta(store.db, 'deadlock-b', '-');
      const gate = () => {
        let open = () => {};
        const opened = new Promise<void>((r) => {
          open = r;
        });
        return { open, opened };
      };
      const aHolds = gate();
      const bHolds = gate();
      let attempts = 0;
      // A locks a then b; B locks b then a: a real deadlock. A checks for deadlocks after 100 ms, B only after
      // 60 s, so PostgreSQL aborts A — which inTransaction must run again once B has committed.
      const a = inTransaction(store, async (tx) => {
        attempts++;
        await sql`set local deadlock_timeout = '100ms'`.execute(tx);
        await setMeta(tx, 'deadlock-a', `A${attempts}`);
        if (attempts === 1) {
          aHolds.open();
          await bHolds.opened;
        }
        await setMeta(tx, 'deadlock-b', `A${attempts}`);
      });
      const b = store.db.transaction().execute(async (tx) => {
        await sql`set local deadlock_timeout = '60s'`.execute(tx);
        await setMeta(tx, 'deadlock-b', 'B');
        bHolds.open();
        await aHolds.opened;
        await setMeta(tx, 'deadlock-a', 'B');
      });
      await Promise.all([a, b]);
      assert.equal(attempts, 2, 'the aborted transaction ran once more');
      assert.equal(await getMeta(store.db, 'deadlock-a'), 'A2');
      assert.equal(await getMeta(store.db, 'deadlock-b'), 'A2');
    } finally {
      await store.close();
    }
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
