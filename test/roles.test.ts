// Every admin route × every role, as a table generated from the running server (not a hand-kept list): the
// routes come from Fastify's own route tree, each one's permission from the OpenAPI document (`x-permission`,
// what the route declares in `config.permission`). One operator per role calls every route with a minimal
// request: a role without the permission gets 403 and the database is unchanged (every table compared); a role
// with it never gets 403. Without a token, every admin route answers 401.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import SQLite from 'better-sqlite3';
import Fastify, { type FastifyInstance } from 'fastify';
import { adminPlugin } from '../src/server/plugins/admin.ts';
import { allows, type Permission, ROLES, type Role } from '../src/server/roles.ts';
import { type Route, routesOf } from './helpers/routes.ts';
import { callAs, startTestServer, type TestServer } from './helpers/server.ts';

let ts: TestServer;
const tokens = {} as Record<Role, string>;

/** The permission the design gives each admin route (docs/security.md, the roles table). */
function designed({ method, url }: Route): Permission {
  if (url.startsWith('/v1/admin/operators/:name/tokens')) return 'read'; // its own tokens; others' need admin
  if (url.startsWith('/v1/admin/operators') || url.endsWith('/retire') || url.includes('vendor-tuf'))
    return 'admin';
  // Webhooks send data wherever they point: adding and removing one is an admin's; a test send is operating.
  if (url === '/v1/admin/webhooks' && method === 'POST') return 'admin';
  if (url === '/v1/admin/webhooks/:id' && method === 'DELETE') return 'admin';
  if (method === 'GET' || url === '/v1/admin/token/rotate') return 'read';
  if (url.endsWith('/approve')) return 'approve';
  return 'operate';
}

/**
 * A minimal request for the route: real parameters where they matter, an empty body elsewhere. An operator's
 * tokens are the caller's own; other operator routes name nobody (an admin must not revoke itself mid-table).
 */
function requestFor(r: Route, role: Role): { path: string; body?: unknown } {
  const path = r.url
    .replace(':name', r.url.includes('/tokens') ? `role-${role}` : 'nobody')
    .replace(':token', 'nope')
    .replace(':ref', 'nope@1')
    .replace(':id', '999')
    .replace(':vendor', 'acme');
  const bodies: Record<string, unknown> = {
    'POST /v1/admin/operators': { name: `made-by-${role}`, role: 'viewer' },
    'POST /v1/admin/operators/:name/tokens': { name: `t-${role}` },
    'POST /v1/admin/operators/:name/role': { role: 'viewer' },
    'POST /v1/admin/fleet/hold': { selector: '*', allow_empty: true },
  };
  if (r.method === 'GET') return { path };
  return { path, body: bodies[`${r.method} ${r.url}`] ?? {} };
}

const call = (method: string, path: string, token: string | null, body?: unknown) =>
  callAs(ts.url, method, path, token, body);

/** Every row of every table (but when a token was last used, which authentication itself records). */
function snapshot(): string {
  const db = new SQLite(join(ts.dir, 'server', 'ringfence.db'), { readonly: true });
  try {
    const tables = db
      .prepare(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name",
      )
      .all() as Array<{ name: string }>;
    return JSON.stringify(
      tables.map(({ name }) => [
        name,
        (db.prepare(`select * from "${name}"`).all() as Array<Record<string, unknown>>).map((row) => {
          const { last_used_at: _, ...rest } = row;
          return rest;
        }),
      ]),
    );
  } finally {
    db.close();
  }
}

let adminRoutes: Array<Route & { permission: Permission }>;

before(async () => {
  ts = await startTestServer({ limits: { failedAuthBurst: 10_000 } });
  for (const role of ROLES) {
    const r = await call('POST', '/v1/admin/operators', ts.conn.token, { name: `role-${role}`, role });
    assert.equal(r.status, 201);
    tokens[role] = String(r.body.token);
  }
  const doc = (await call('GET', '/v1/openapi.json', null)).body as {
    paths: Record<string, Record<string, { 'x-permission'?: Permission }>>;
  };
  const all = routesOf(ts.srv.app.printRoutes({ commonPrefix: false }));
  adminRoutes = all
    .filter((r) => r.url.startsWith('/v1/admin/'))
    .map((r) => {
      const op = doc.paths[r.url.replace(/:(\w+)/g, '{$1}')]?.[r.method.toLowerCase()];
      assert.ok(op, `${r.method} ${r.url} is not in the OpenAPI document`);
      assert.ok(op['x-permission'], `${r.method} ${r.url} publishes no permission`);
      return { ...r, permission: op['x-permission'] };
    });
});
after(() => ts.close());

describe('every admin route × every role', () => {
  it('finds the admin routes on the running server, each declaring the permission the design gives it', () => {
    assert.ok(adminRoutes.length >= 35, `only ${adminRoutes.length} admin routes found`);
    for (const p of ['read', 'operate', 'approve', 'admin'] as const)
      assert.ok(
        adminRoutes.some((r) => r.permission === p),
        `no route needs ${p}`,
      );
    const wrong = adminRoutes
      .filter((r) => r.permission !== designed(r))
      .map((r) => `${r.method} ${r.url}: ${r.permission}, designed ${designed(r)}`);
    assert.deepEqual(wrong, []);
  });

  it('refuses to start with an admin route that declares no permission, naming it', async () => {
    const app = Fastify() as unknown as FastifyInstance;
    try {
      await assert.rejects(
        (async () => {
          await adminPlugin(app, ts.srv.ctx, [(scope) => scope.get('/v1/admin/unguarded', async () => ({}))]);
          await app.ready();
        })(),
        /admin route GET \/v1\/admin\/unguarded declares no permission/,
      );
    } finally {
      await app.close();
    }
  });

  it('answers 401 to every admin route without a token', async () => {
    for (const r of adminRoutes) {
      const { path, body } = requestFor(r, 'viewer');
      const a = await call(r.method, path, null, body);
      assert.equal(a.status, 401, `${r.method} ${path}`);
    }
  });

  for (const role of ROLES)
    it(`${role}: forbidden → 403 and nothing changed; allowed → not 403`, async () => {
      let refused = 0;
      for (const r of adminRoutes) {
        const { path, body } = requestFor(r, role);
        const allowed = allows(role, r.permission);
        const before = allowed ? '' : snapshot();
        const a = await call(r.method, path, tokens[role], body);
        const what = `${role} ${r.method} ${path} (needs ${r.permission}): ${a.status} ${JSON.stringify(a.body)}`;
        if (allowed) {
          assert.notEqual(a.status, 403, what);
          assert.notEqual(a.status, 401, what);
          // Rotating one's own token: the old one is refused from now on.
          if (r.url === '/v1/admin/token/rotate' && a.status === 200) tokens[role] = String(a.body.token);
          continue;
        }
        refused++;
        assert.equal(a.status, 403, what);
        assert.equal(a.body.error, 'forbidden');
        assert.match(String(a.body.message), new RegExp(`^role ${role} may not .+ \\(needs .+\\)$`), what);
        assert.equal(snapshot(), before, `${what}: the database changed`);
      }
      if (role === 'admin') assert.equal(refused, 0);
      else assert.ok(refused > 0, `${role} was refused nothing`);
    });
});
