// Migration 0005 gives failed assignments of an existing database the class their old `class: reason` text
// names: the engine retries by class, so a health failure that mentions the network must not become retryable.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, sql } from 'kysely';
import { migrations } from '../src/server/db/migrations.ts';

describe('migration 0005: assignment failure classes', () => {
  it('backfills the class from the legacy reason prefix, else unknown; leaves other states alone', async () => {
    const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new SQLite(':memory:') }) });
    try {
      const migrator = new Migrator({ db, provider: migrations('sqlite') });
      const to4 = await migrator.migrateTo('0004_assignment_outcome');
      assert.equal(to4.error, undefined);
      const rows: Array<[string, string, string | null]> = [
        ['a', 'failed', 'health: probe said network unreachable (ECONNREFUSED)'],
        ['b', 'failed', 'download: connection reset'],
        ['c', 'failed', 'no report before the deadline'],
        ['d', 'failed', 'network went away'],
        ['e', 'failed', null],
        ['f', 'failed', 'vendor-unavailable: no metadata source'],
        ['g', 'succeeded', null],
        ['h', 'skipped', 'download: device retired'],
      ];
      for (const [id, state, reason] of rows)
        await sql`insert into assignments (rollout_id, device_id, wave, state, reason)
          values (1, ${id}, 0, ${state}, ${reason})`.execute(db);
      const latest = await migrator.migrateToLatest();
      assert.equal(latest.error, undefined);
      const got = await sql<{ device_id: string; failure_class: string | null }>`
        select device_id, failure_class from assignments order by device_id`.execute(db);
      assert.deepEqual(Object.fromEntries(got.rows.map((r) => [r.device_id, r.failure_class])), {
        a: 'health',
        b: 'download',
        c: 'no-report',
        d: 'unknown',
        e: 'unknown',
        f: 'vendor-unavailable',
        g: null,
        h: null,
      });
    } finally {
      await db.destroy();
    }
  });
});
