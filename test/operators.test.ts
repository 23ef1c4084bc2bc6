// Operators over a real server: add, list, revoke, rotate, set-role; named tokens with an expiry; the last admin
// kept; every change audited with the caller as actor (`NAME`, or `NAME/TOKEN` for a named token); the audit
// log filtered by actor.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { callAs, startTestServer, type TestServer } from './helpers/server.ts';

let ts: TestServer;
/** The server's clock: real time plus `skew`, so expiry is tested without waiting. */
let skew = 0;

interface Answer {
  status: number;
  body: Record<string, unknown> & { message?: string };
}

const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Answer> =>
  callAs(ts.url, method, path, token, body);

/** Calls as `token`, asserting the status. */
async function ok(status: number, method: string, path: string, token: string, body?: unknown) {
  const r = await call(method, path, token, body);
  assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`);
  return r.body;
}

interface AuditEntry {
  actor: string;
  action: string;
  subject: string;
  detail: Record<string, unknown>;
}

async function audit(query = ''): Promise<AuditEntry[]> {
  return (await ok(200, 'GET', `/v1/admin/audit?limit=1000${query}`, admin())) as unknown as AuditEntry[];
}

const admin = () => ts.conn.token;

before(async () => {
  ts = await startTestServer({ clock: () => Date.now() + skew });
});
after(() => ts.close());

describe('operators', () => {
  it('the bootstrap token is operator admin, token bootstrap, actor admin', async () => {
    const me = await ok(200, 'GET', '/v1/admin/whoami', admin());
    assert.deepEqual(me, {
      name: 'admin',
      role: 'admin',
      token: 'bootstrap',
      actor: 'admin',
      permissions: ['read', 'operate', 'approve', 'admin'],
    });
  });

  it('adds an operator with a token shown once; list never shows tokens or hashes', async () => {
    const added = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'alice', role: 'viewer' });
    assert.equal(added.name, 'alice');
    assert.equal(added.role, 'viewer');
    assert.match(String(added.token), /^rfop_/);
    const me = await ok(200, 'GET', '/v1/admin/whoami', String(added.token));
    assert.equal(me.actor, 'alice');
    assert.deepEqual(me.permissions, ['read']);

    const dup = await call('POST', '/v1/admin/operators', admin(), { name: 'alice', role: 'admin' });
    assert.equal(dup.status, 409);
    for (const bad of [
      { name: 'Al/ice', role: 'viewer' },
      { name: 'bob', role: 'root' },
    ])
      assert.equal((await call('POST', '/v1/admin/operators', admin(), bad)).status, 400);

    const list = await ok(200, 'GET', '/v1/admin/operators', admin());
    const text = JSON.stringify(list);
    assert.ok(!text.includes(String(added.token)) && !/hash/.test(text), text);
    const alice = (
      list.operators as Array<{ name: string; created_by: string; tokens: Array<{ name: string }> }>
    ).find((o) => o.name === 'alice');
    assert.equal(alice?.created_by, 'admin');
    assert.deepEqual(
      alice?.tokens.map((t) => t.name),
      ['default'],
    );
    const entry = (await audit()).find(
      (e) => e.action === 'operator.added' && e.subject === 'operator/alice',
    );
    assert.equal(entry?.actor, 'admin');
    assert.ok(!JSON.stringify(entry).includes(String(added.token)));
  });

  it('a viewer is refused a change with 403 and a one-line reason, and nothing changes', async () => {
    const v = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'vera', role: 'viewer' });
    const before = (await audit()).length;
    const r = await call('POST', '/v1/admin/enroll-tokens', String(v.token), {});
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'forbidden');
    assert.match(
      String(r.body.message),
      /^role viewer may not POST \/v1\/admin\/enroll-tokens \(needs operator or admin\)$/,
    );
    const r2 = await call('POST', '/v1/admin/operators', String(v.token), { name: 'eve', role: 'admin' });
    assert.equal(r2.status, 403);
    assert.equal((await audit()).length, before);
  });

  it('rotate: the old token is refused from the next request, the new one works', async () => {
    const o = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'olga', role: 'operator' });
    const old = String(o.token);
    const rotated = await ok(200, 'POST', '/v1/admin/operators/olga/rotate', admin());
    assert.notEqual(rotated.token, old);
    const refused = await call('GET', '/v1/admin/whoami', old);
    assert.equal(refused.status, 401);
    assert.equal(refused.body.message, 'token revoked');
    const me = await ok(200, 'GET', '/v1/admin/whoami', String(rotated.token));
    assert.equal(me.token, 'default');
    // Rotating one's own token (any role) through /v1/admin/token/rotate.
    const own = await ok(200, 'POST', '/v1/admin/token/rotate', String(rotated.token));
    assert.equal((await call('GET', '/v1/admin/whoami', String(rotated.token))).status, 401);
    assert.equal((await ok(200, 'GET', '/v1/admin/whoami', String(own.token))).name, 'olga');
    const actions = (await audit('&actor=olga')).map((e) => [e.actor, e.action]);
    assert.deepEqual(actions, [['olga', 'admin.token-rotated']]);
    const byAdmin = (await audit()).find(
      (e) => e.action === 'operator.rotated' && e.subject === 'operator/olga',
    );
    assert.equal(byAdmin?.actor, 'admin');
  });

  it('set-role changes what an operator may do at once', async () => {
    const p = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'pat', role: 'viewer' });
    assert.equal((await call('POST', '/v1/admin/enroll-tokens', String(p.token), {})).status, 403);
    await ok(200, 'POST', '/v1/admin/operators/pat/role', admin(), { role: 'operator' });
    assert.equal((await call('POST', '/v1/admin/enroll-tokens', String(p.token), {})).status, 201);
    const e = (await audit('&actor=pat')).find((x) => x.action === 'enroll-token.created');
    assert.equal(e?.actor, 'pat');
    const changed = (await audit()).find(
      (x) => x.action === 'operator.role-changed' && x.subject === 'operator/pat',
    );
    assert.deepEqual(changed?.detail, { from: 'viewer', to: 'operator' });
  });

  it('revoke: every token of the operator is refused with "operator revoked"', async () => {
    const r = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'rex', role: 'approver' });
    const ci = await ok(201, 'POST', '/v1/admin/operators/rex/tokens', String(r.token), { name: 'ci' });
    await ok(200, 'POST', '/v1/admin/operators/rex/revoke', admin());
    for (const t of [r.token, ci.token]) {
      const a = await call('GET', '/v1/admin/whoami', String(t));
      assert.equal(a.status, 401);
      assert.equal(a.body.message, 'operator revoked');
    }
    assert.equal((await call('POST', '/v1/admin/operators/rex/rotate', admin())).status, 409);
    assert.equal((await call('POST', '/v1/admin/operators/nobody/revoke', admin())).status, 404);
  });

  it('named tokens: actor NAME/TOKEN, expiry (401 token expired), revoke, own only', async () => {
    const c = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'carl', role: 'operator' });
    const ci = await ok(201, 'POST', '/v1/admin/operators/carl/tokens', String(c.token), {
      name: 'ci-build',
      expires_in_s: 3600,
    });
    assert.equal(typeof ci.expires_at, 'number');
    const dup = await call('POST', '/v1/admin/operators/carl/tokens', admin(), { name: 'ci-build' });
    assert.equal(dup.status, 409);
    const me = await ok(200, 'GET', '/v1/admin/whoami', String(ci.token));
    assert.equal(me.actor, 'carl/ci-build');
    await ok(201, 'POST', '/v1/admin/enroll-tokens', String(ci.token), {});
    // Someone else's tokens need admin.
    const v = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'val', role: 'operator' });
    const other = await call('POST', '/v1/admin/operators/carl/tokens', String(v.token), { name: 'x' });
    assert.equal(other.status, 403);
    assert.match(String(other.body.message), /^role operator may not manage another operator's tokens/);
    assert.equal(
      (await call('POST', '/v1/admin/operators/carl/tokens/ci-build/revoke', String(v.token))).status,
      403,
    );

    // `actor=carl` matches carl and carl/…, and not an operator whose name merely starts with it.
    await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'carla', role: 'operator' });
    const mine = await audit('&actor=carl');
    assert.deepEqual(
      mine.map((e) => [e.actor, e.action]),
      [
        ['carl', 'operator.token-added'],
        ['carl/ci-build', 'enroll-token.created'],
      ],
    );
    assert.deepEqual(
      (await audit('&actor=carl/ci-build')).map((e) => e.actor),
      ['carl/ci-build'],
    );

    skew = 3601_000;
    try {
      const expired = await call('GET', '/v1/admin/whoami', String(ci.token));
      assert.equal(expired.status, 401);
      assert.equal(expired.body.message, 'token expired');
      assert.equal((await call('GET', '/v1/admin/whoami', String(c.token))).status, 200);
    } finally {
      skew = 0;
    }
    const short = await ok(201, 'POST', '/v1/admin/operators/carl/tokens', String(c.token), {
      name: 'short',
    });
    await ok(200, 'POST', '/v1/admin/operators/carl/tokens/short/revoke', String(c.token));
    const revoked = await call('GET', '/v1/admin/whoami', String(short.token));
    assert.equal(revoked.status, 401);
    assert.equal(
      (await call('POST', '/v1/admin/operators/carl/tokens/short/revoke', String(c.token))).status,
      404,
    );
    const listed = await ok(200, 'GET', '/v1/admin/operators', admin());
    const carl = (listed.operators as Array<{ name: string; tokens: Array<Record<string, unknown>> }>).find(
      (o) => o.name === 'carl',
    );
    const byName = Object.fromEntries((carl?.tokens ?? []).map((t) => [t.name, t]));
    assert.equal(typeof byName['ci-build']?.last_used_at, 'number');
    assert.equal(typeof byName.short?.revoked_at, 'number');
  });

  it('the last admin can be neither revoked nor demoted; a second admin makes it possible', async () => {
    for (const [path, body] of [
      ['/v1/admin/operators/admin/revoke', undefined],
      ['/v1/admin/operators/admin/role', { role: 'operator' }],
      ['/v1/admin/operators/admin/tokens/bootstrap/revoke', undefined],
    ] as const) {
      const r = await call('POST', path, admin(), body);
      assert.equal(r.status, 409, path);
      assert.match(String(r.body.message), /last/);
    }
    assert.equal((await ok(200, 'GET', '/v1/admin/whoami', admin())).role, 'admin');
    const b = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'bea', role: 'admin' });
    await ok(200, 'POST', '/v1/admin/operators/admin/role', String(b.token), { role: 'approver' });
    const me = await ok(200, 'GET', '/v1/admin/whoami', admin());
    assert.equal(me.role, 'approver');
    // bea is now the last admin.
    assert.equal((await call('POST', '/v1/admin/operators/bea/revoke', String(b.token))).status, 409);
    await ok(200, 'POST', '/v1/admin/operators/admin/role', String(b.token), { role: 'admin' });
    await ok(200, 'POST', '/v1/admin/operators/bea/revoke', admin());
    assert.equal((await call('GET', '/v1/admin/whoami', String(b.token))).status, 401);
  });

  it('an admin without a working permanent token does not count: nobody can lock everybody out', async () => {
    // A second admin whose only token is revoked, or an expiring token, is no way back in.
    const c = await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'cleo', role: 'admin' });
    await ok(200, 'POST', '/v1/admin/operators/cleo/tokens/default/revoke', admin());
    const soon = await ok(201, 'POST', '/v1/admin/operators/admin/tokens', admin(), {
      name: 'tmp',
      expires_in_s: 60,
    });
    for (const [path, token] of [
      ['/v1/admin/operators/admin/revoke', admin()],
      ['/v1/admin/operators/admin/tokens/bootstrap/revoke', String(soon.token)],
    ] as const) {
      const r = await call('POST', path, token);
      assert.equal(r.status, 409, path);
      assert.match(String(r.body.message), /does not expire/);
    }
    assert.equal((await call('GET', '/v1/admin/whoami', String(c.token))).status, 401);
    assert.equal((await ok(200, 'GET', '/v1/admin/whoami', admin())).role, 'admin');
  });

  it('a short-lived token cannot mint a longer-lived one; server token names and system names are reserved', async () => {
    await ok(201, 'POST', '/v1/admin/operators', admin(), { name: 'dora', role: 'operator' });
    const own = await ok(201, 'POST', '/v1/admin/operators/dora/tokens', admin(), {
      name: 'ci',
      expires_in_s: 60,
    });
    const minted = await ok(201, 'POST', '/v1/admin/operators/dora/tokens', String(own.token), {
      name: 'forever',
    });
    assert.equal(minted.expires_at, own.expires_at, 'capped at the expiry of the token that asked');
    const longer = await ok(201, 'POST', '/v1/admin/operators/dora/tokens', String(own.token), {
      name: 'longer',
      expires_in_s: 86_400,
    });
    assert.equal(longer.expires_at, own.expires_at);
    for (const name of ['default', 'bootstrap', 'oidc']) {
      const r = await call('POST', '/v1/admin/operators/dora/tokens', admin(), { name });
      assert.equal(r.status, 400, name);
    }
    for (const name of ['engine', 'server', 'device', 'migration', 'admin']) {
      const r = await call('POST', '/v1/admin/operators', admin(), { name, role: 'viewer' });
      assert.equal(r.status, 400, name);
      assert.match(String(r.body.message), /reserved/);
    }
  });
});
