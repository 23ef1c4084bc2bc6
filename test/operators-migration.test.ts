// An existing server carried over: a SQLite database as the code before operators left it (migrated up to 0006,
// the admin token's hash in meta `admin_token_hash`) is opened by today's server; the old token keeps working as
// operator `admin` through token `bootstrap`, audited as actor `admin`, and nothing new is printed.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, sql } from 'kysely';
import pino from 'pino';
import { createServer, type RunningServer } from '../src/server/app.ts';
import { migrations } from '../src/server/db/migrations.ts';
import { hashToken } from '../src/server/tokens.ts';

const OLD_TOKEN = 'rfadm_oldServerToken0123456789abcdefghijklmnopq';
let dir: string;
let srv: RunningServer;
let url: string;

async function call(method: string, path: string, token: string, body?: unknown) {
  const res = await fetch(new URL(path, url), {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-opmig-'));
  const data = join(dir, 'server');
  mkdirSync(data, { mode: 0o700 });
  // The database as the previous version left it: schema up to 0006 and the token in meta.
  const db = new Kysely<unknown>({
    dialect: new SqliteDialect({ database: new SQLite(join(data, 'ringfence.db')) }),
  });
  const { error } = await new Migrator({ db, provider: migrations('sqlite') }).migrateTo(
    '0006_assignment_revisions',
  );
  assert.equal(error, undefined);
  const tables = await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(db);
  assert.ok(!tables.rows.some((t) => t.name === 'operators'), 'migrated only up to 0006');
  await sql`insert into meta (key, value) values ('admin_token_hash', ${hashToken(OLD_TOKEN)})`.execute(db);
  await db.destroy();

  srv = await createServer({ dataDir: data, logger: pino({ level: 'silent' }), tickMs: 50 });
  url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
});
after(async () => {
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('an existing server migrates to operators', () => {
  it('prints no new token: the old one is still the admin token', () => {
    assert.equal(srv.newAdminToken, null);
    assert.equal(srv.adminTokenFromEnv, false);
  });

  it('the old admin token works as operator admin, token bootstrap', async () => {
    const me = await call('GET', '/v1/admin/whoami', OLD_TOKEN);
    assert.equal(me.status, 200);
    assert.deepEqual(me.body, {
      name: 'admin',
      role: 'admin',
      token: 'bootstrap',
      actor: 'admin',
      permissions: ['read', 'operate', 'approve', 'admin'],
    });
    assert.equal((await call('GET', '/v1/admin/whoami', `${OLD_TOKEN}x`)).status, 401);
  });

  it('its actions are audited as actor admin', async () => {
    assert.equal((await call('POST', '/v1/admin/enroll-tokens', OLD_TOKEN, {})).status, 201);
    const audit = await call('GET', '/v1/admin/audit?actor=admin', OLD_TOKEN);
    const created = (audit.body as Array<{ actor: string; action: string }>).find(
      (e) => e.action === 'enroll-token.created',
    );
    assert.equal(created?.actor, 'admin');
    const list = await call('GET', '/v1/admin/operators', OLD_TOKEN);
    assert.equal(list.body.operators[0].created_by, 'migration');
  });
});
