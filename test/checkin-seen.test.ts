// What the check-in's speed-ups must not change, on SQLite and PostgreSQL: last-seen times are written a moment
// after the check-in (never earlier than it happened, never moving back) and when the server stops; hot queries
// reuse one compiled text per shape and answer as the query itself would.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { openStore } from '../src/server/db/database.ts';
import { markSeen } from '../src/server/db/devices.ts';
import { padIn, runShaped } from '../src/server/db/shaped.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { checkin, enrollDevices } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

/** Waits (for the clock, not a fixed time) until now is past `t`, so a later write is told apart from one at `t`. */
async function pastMs(t: number): Promise<number> {
  while (Date.now() <= t) await new Promise((r) => setImmediate(r));
  return Date.now();
}

const lastSeen = async (ts: TestServer, id: string) =>
  (
    await ts.srv.ctx.store.db
      .selectFrom('devices')
      .select('last_seen_at')
      .where('id', '=', id)
      .executeTakeFirstOrThrow()
  ).last_seen_at;

function suite(dialect: 'sqlite' | 'postgres', databaseUrl: () => string | undefined) {
  describe(`last-seen times and prepared shapes (${dialect})`, () => {
    let ts: TestServer;
    before(async () => {
      ts = await startTestServer({ databaseUrl: databaseUrl() });
    });
    after(() => ts.close());

    it('records a check-in as seen a moment later, at the time it happened; a time never moves back', async () => {
      const [d] = await enrollDevices(ts.conn, [{ env: 'seen' }]);
      const before = await pastMs(await lastSeen(ts, d.id)); // enrollment set it
      await checkin(ts.conn, d, 'seen-c');
      const after = Date.now();
      const at = await until(
        () => lastSeen(ts, d.id),
        (t) => t >= before,
        60_000,
        'last-seen written',
      );
      assert.ok(at <= after, 'seen no later than the check-in was answered');
      // Another replica's older time (written late) does not move it back.
      await markSeen(ts.srv.ctx.store.db, new Map([[d.id, at - 1000]]));
      assert.equal(await lastSeen(ts, d.id), at);
    });

    it('reuses one compiled text per shape, with the answers of the query itself', async () => {
      const devs = await enrollDevices(
        ts.conn,
        Array.from({ length: 11 }, () => ({ env: 'shape' })),
      );
      const db = ts.srv.ctx.store.db;
      let built = 0;
      const byIds = (ids: string[]) => {
        const padded = padIn(ids);
        return runShaped(db, `test-shape:${padded.length}`, padded, () => {
          built++;
          return db.selectFrom('devices').select('id').where('id', 'in', padded);
        });
      };
      const ids = devs.map((d) => d.id);
      // 9, 10 and 11 values all pad to 16: one shape, compiled once; duplicates change nothing in an IN.
      for (const n of [9, 10, 11]) {
        const rows = await byIds(ids.slice(0, n));
        assert.deepEqual(rows.map((r) => r.id).sort(), ids.slice(0, n).sort());
      }
      assert.equal(built, 1);
      assert.deepEqual(padIn(['a', 'b']), ['a', 'b']);
      assert.equal(padIn(ids.slice(0, 9)).length, 16);
      assert.equal(padIn(Array.from({ length: 65 }, (_, i) => i)).length, 128);
    });

    it('writes the last-seen times it still holds when the server stops', async () => {
      const own = await startTestServer({ databaseUrl: databaseUrl() });
      // On PostgreSQL it shares the database, and the admin token, of the server above.
      const conn = own.conn.token ? own.conn : { server: own.url, token: ts.conn.token };
      const [d] = await enrollDevices(conn, [{ env: 'stop' }]);
      const before = await pastMs(await lastSeen(own, d.id)); // enrollment set it
      await checkin(conn, d, 'stop-c');
      await own.srv.close(); // at once: well within the flush interval
      const store = await openStore({ dataDir: own.srv.ctx.dataDir, url: databaseUrl() });
      try {
        const row = await store.db
          .selectFrom('devices')
          .select('last_seen_at')
          .where('id', '=', d.id)
          .executeTakeFirstOrThrow();
        assert.ok(row.last_seen_at >= before, 'the held last-seen time was written on close');
      } finally {
        await store.close();
        rmSync(own.dir, { recursive: true, force: true });
      }
    });
  });
}

suite('sqlite', () => undefined);

const skip = pgBinDir() ? false : 'PostgreSQL is not installed (CI installs it)';
describe('on PostgreSQL', { skip, timeout: 300_000 }, () => {
  let pg: PgCluster | undefined;
  before(async () => {
    pg = await startPostgres();
  });
  after(() => pg?.stop());
  suite('postgres', () => pg?.url);
});
