// Bad input gets a clear one-line error and leaves no partial state.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

async function raw(
  ts: TestServer,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = ts.conn.token,
  type = 'application/json',
) {
  const res = await fetch(new URL(path, ts.url), {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': type } : {}),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: res.status,
    body: (await res.json().catch(() => null)) as { error?: string; message?: string } | null,
  };
}

describe('API input handling', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer();
  });
  after(() => ts.close());

  it('rejects missing and wrong admin tokens with 401 and nothing else', async () => {
    for (const token of [null, 'rfadm_wrong']) {
      const r = await raw(ts, 'GET', '/v1/admin/releases', undefined, token);
      assert.equal(r.status, 401);
      assert.deepEqual(Object.keys(r.body ?? {}).sort(), ['error', 'message']);
    }
  });

  it('rejects unknown, used-up and revoked enrollment tokens', async () => {
    assert.equal((await raw(ts, 'POST', '/v1/enroll', { token: 'nope' }, null)).status, 401);
    const t = await api<{ id: string; token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', {});
    assert.equal((await raw(ts, 'POST', '/v1/enroll', { token: t.token }, null)).status, 200);
    assert.equal(
      (await raw(ts, 'POST', '/v1/enroll', { token: t.token }, null)).status,
      401,
      'single use by default',
    );
    const t2 = await api<{ id: string; token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', {
      uses: null,
    });
    await api(ts.conn, 'POST', `/v1/admin/enroll-tokens/${t2.id}/revoke`, {});
    assert.equal((await raw(ts, 'POST', '/v1/enroll', { token: t2.token }, null)).status, 401);
  });

  it('rejects a device token that is unknown on check-in and blob download', async () => {
    assert.equal((await raw(ts, 'POST', '/v1/checkin', { components: [] }, 'rfdev_x')).status, 401);
    assert.equal((await raw(ts, 'GET', `/v1/blobs/${'0'.repeat(64)}`, undefined, 'rfdev_x')).status, 401);
  });

  it('rejects malformed plan YAML with the line and field, and stores nothing', async () => {
    const r = await raw(ts, 'POST', '/v1/admin/plans', {
      source: 'name: p\nwaves:\n  - name: a\n    size: many\n',
      file: 'p.yaml',
    });
    assert.equal(r.status, 400);
    assert.match(r.body!.message!, /^p\.yaml:4: waves\.0\.size: /);
    assert.deepEqual(await api(ts.conn, 'GET', '/v1/admin/plans'), []);
  });

  it('rejects unknown releases and plans', async () => {
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: 'name: p\nwaves:\n  - name: a\n    size: 1\n' });
    const r = await raw(ts, 'POST', '/v1/admin/rollouts', { release: 'nope@1', plan: 'p' });
    assert.equal(r.status, 404);
    assert.match(r.body!.message!, /no release nope@1/);
    assert.equal(
      (await raw(ts, 'POST', '/v1/admin/rollouts', { release: 'bad-ref', plan: 'p' })).status,
      400,
    );
    assert.deepEqual(await api(ts.conn, 'GET', '/v1/admin/rollouts'), []);
  });

  it('rejects a release whose blobs were not uploaded or whose names escape the folder', async () => {
    const sha = 'a'.repeat(64);
    const r = await raw(ts, 'POST', '/v1/admin/releases', {
      component: 'c',
      version: '1',
      artifacts: [{ name: 'x', sha256: sha, length: 1 }],
    });
    assert.equal(r.status, 400);
    assert.match(r.body!.message!, /was not uploaded/);
    const up = await fetch(new URL('/v1/admin/blobs', ts.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/octet-stream' },
      body: 'hello',
    });
    const blob = (await up.json()) as { sha256: string; length: number };
    const esc = await raw(ts, 'POST', '/v1/admin/releases', {
      component: 'c',
      version: '1',
      artifacts: [{ name: '../../etc/passwd', sha256: blob.sha256, length: 5 }],
    });
    assert.equal(esc.status, 400);
    assert.deepEqual(await api(ts.conn, 'GET', '/v1/admin/releases'), []);
    // Releases are immutable.
    const ok = { component: 'c', version: '1', artifacts: [{ name: 'x', sha256: blob.sha256, length: 5 }] };
    assert.equal((await raw(ts, 'POST', '/v1/admin/releases', ok)).status, 201);
    assert.equal((await raw(ts, 'POST', '/v1/admin/releases', ok)).status, 409);
  });

  it('rejects a blob whose declared hash does not match, keeping nothing', async () => {
    const up = await fetch(new URL('/v1/admin/blobs', ts.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${ts.conn.token}`,
        'content-type': 'application/octet-stream',
        'x-sha256': 'b'.repeat(64),
      },
      body: 'hello',
    });
    assert.equal(up.status, 400);
    assert.ok(!ts.srv.ctx.blobs.has('b'.repeat(64)));
  });

  it('rejects oversized JSON bodies with 413', async () => {
    const r = await raw(ts, 'POST', '/v1/admin/plans', { source: 'x'.repeat(2 * 1024 * 1024) });
    assert.equal(r.status, 413);
  });

  it('serves blob ranges so downloads resume', async () => {
    const up = await fetch(new URL('/v1/admin/blobs', ts.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/octet-stream' },
      body: '0123456789',
    });
    const { sha256 } = (await up.json()) as { sha256: string };
    const res = await fetch(new URL(`/v1/blobs/${sha256}`, ts.url), {
      headers: { authorization: `Bearer ${ts.conn.token}`, range: 'bytes=4-' },
    });
    assert.equal(res.status, 206);
    assert.equal(await res.text(), '456789');
    assert.equal(res.headers.get('content-range'), 'bytes 4-9/10');
  });

  it('publishes OpenAPI and Prometheus metrics', async () => {
    const doc = (await (await fetch(new URL('/v1/openapi.json', ts.url))).json()) as {
      paths: Record<string, unknown>;
    };
    assert.ok(doc.paths['/v1/checkin'] && doc.paths['/v1/admin/rollouts/{id}']);
    const m = await (await fetch(new URL('/metrics', ts.url))).text();
    assert.match(m, /ringfence_checkins_total/);
  });
});
