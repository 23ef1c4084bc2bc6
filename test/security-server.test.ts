// The server's trust boundary, tried as an attacker would: admin routes reached by other URL spellings, devices
// that spam, grow, lie about their labels or hold connections, and input that used to answer 500.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { checkin, enrollDevices, type ProtocolDevice, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

/** Sends one raw HTTP/1.1 request over a socket (any request target, no client-side normalisation). */
function rawHttp(url: string, text: string): Promise<{ status: number; head: string; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    let data = '';
    sock.setEncoding('latin1');
    sock.on('data', (c) => {
      data += c;
    });
    sock.on('error', reject);
    sock.on('close', () => {
      const [head, body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 0), head, body });
    });
    sock.write(
      text.includes('Connection:') ? text : text.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'),
    );
  });
}

async function req(
  ts: TestServer,
  method: string,
  path: string,
  opts: { body?: unknown; token?: string | null; headers?: Record<string, string>; raw?: string } = {},
) {
  const token = opts.token === undefined ? ts.conn.token : opts.token;
  const res = await fetch(new URL(path, ts.url), {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(opts.body !== undefined || opts.raw !== undefined ? { 'content-type': 'application/json' } : {}),
      ...opts.headers,
    },
    body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
  });
  const text = await res.text();
  let body: Record<string, unknown> | null = null;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, headers: res.headers };
}

const deep = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;

describe('admin routes are authenticated by route, whatever the URL spelling', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer();
  });
  after(() => ts.close());

  it('refuses encoded, absolute-form and HEAD spellings without the token', async () => {
    const paths = ['/v1/%61dmin/devices', '/%76%31/admin/devices', '/v1/admin/devices', '/v1//admin/devices'];
    for (const p of paths) {
      for (const method of ['GET', 'HEAD']) {
        const r = await rawHttp(ts.url, `${method} ${p} HTTP/1.1\r\nHost: x\r\n\r\n`);
        assert.ok(r.status === 401 || r.status === 404, `${method} ${p} answered ${r.status}`);
      }
    }
    for (const target of ['http://x/v1/admin/devices', 'http://127.0.0.1/v1/%61dmin/devices', '*']) {
      for (const method of ['GET', 'HEAD']) {
        const r = await rawHttp(ts.url, `${method} ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
        assert.equal(r.status, 400, `${method} ${target} answered ${r.status}`);
      }
    }
    // With the token, the encoded spelling reaches the same route: it is the route that is protected.
    const ok = await rawHttp(
      ts.url,
      `GET /v1/%61dmin/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ts.conn.token}\r\n\r\n`,
    );
    assert.equal(ok.status, 200);
  });

  it('cannot run the chained takeover without a token (upload, register, approve, pin)', async () => {
    const up = await req(ts, 'POST', '/v1/%61dmin/blobs', { token: null, body: 'x' });
    assert.equal(up.status, 401);
    const reg = await req(ts, 'POST', '/v1/%61dmin/releases', {
      token: null,
      body: { component: 'evil', version: '1', artifacts: [] },
    });
    assert.equal(reg.status, 401);
    assert.equal((await req(ts, 'POST', '/v1/%61dmin/releases/evil@1/approve', { token: null })).status, 401);
    const pin = await req(ts, 'POST', '/v1/%61dmin/fleet/pin', {
      token: null,
      body: { selector: '*', release: 'evil@1' },
    });
    assert.equal(pin.status, 401);
    const rels = await api<unknown[]>(ts.conn, 'GET', '/v1/admin/releases');
    assert.equal(rels.length, 0);
  });

  it('refuses a cross-origin request even when the browser could attach credentials', async () => {
    const body = { headers: { origin: 'http://evil.example' } };
    assert.equal((await req(ts, 'POST', '/v1/%61dmin/enroll-tokens', { ...body, token: null })).status, 403);
    assert.equal((await req(ts, 'POST', '/v1/admin/enroll-tokens', body)).status, 403);
    const same = await req(ts, 'POST', '/v1/admin/enroll-tokens', {
      headers: { origin: ts.url.replace(/\/$/, '') },
      body: {},
    });
    assert.equal(same.status, 201, 'the dashboard (same origin) still works');
  });

  it('rotates the admin token: the old one is refused, the new one works', async () => {
    const old = ts.conn.token;
    const r = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/token/rotate', {});
    assert.match(r.token, /^rfadm_/);
    assert.equal((await req(ts, 'GET', '/v1/admin/devices', { token: old })).status, 401);
    ts.conn.token = r.token;
    assert.equal((await req(ts, 'GET', '/v1/admin/devices')).status, 200);
    const audit = await api<Array<{ action: string }>>(ts.conn, 'GET', '/v1/admin/audit');
    assert.ok(audit.some((a) => a.action === 'admin.token-rotated'));
  });

  it('answers 4xx, never 500, to bad queries and deep JSON', async () => {
    for (const q of ['abc', '1.5', '1e400', '-1', '0', '1001', '1&limit=2']) {
      const r = await req(ts, 'GET', `/v1/admin/audit?limit=${q}`);
      assert.equal(r.status, 400, `limit=${q} answered ${r.status}`);
    }
    assert.equal((await req(ts, 'GET', '/v1/admin/audit?subject=a&subject=b')).status, 400);
    // One check for every route: numbers in the path and query must be usable (coercion makes Infinity and 1e20).
    for (const path of [
      '/v1/admin/rollouts/1e400',
      '/v1/admin/rollouts/1e400/devices',
      '/v1/admin/devices/x/history?offset=1e20',
    ])
      assert.equal((await req(ts, 'GET', path)).status, 400, path);
    const all = await req(ts, 'GET', '/v1/admin/audit?limit=1000');
    assert.equal(all.status, 200);
    const r = await req(ts, 'POST', '/v1/admin/plans', { raw: deep(100_000) });
    assert.equal(r.status, 400);
    assert.match(String(r.body?.message), /nested deeper/);
  });
});

describe('what one device can do to the server', () => {
  let ts: TestServer;
  let devs: ProtocolDevice[];
  before(async () => {
    ts = await startTestServer({
      limits: {
        reportsPerDevicePerHour: 3,
        auditPerDevicePerHour: 2,
        checkinBurst: 40,
        checkinsPerDevicePerMinute: 60,
        labelsMaxEntries: 8,
      },
    });
    await release(ts.conn, 'app', '1');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: 'name: all\nfirst_wave_cap: 100%\nwaves:\n  - name: all\n    size: 100%\n',
    });
    const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', {
      uses: 10,
      labels: { ring: 'canary' },
    });
    devs = [];
    for (const name of ['spammer', 'honest']) {
      const r = await req(ts, 'POST', '/v1/enroll', {
        token: null,
        body: { token: tok.token, name, labels: { ring: 'broad', site: 'x' } },
      });
      assert.equal(r.status, 200);
      devs.push({
        id: String(r.body?.device_id),
        token: String(r.body?.device_token),
        name,
        version: null,
        state: 'idle',
      });
    }
  });
  after(() => ts.close());

  const body = (components: unknown[], extra: Record<string, unknown> = {}) => ({ components, ...extra });
  const comp = { name: 'app', version: null, state: 'idle' };

  it('keeps the enrollment token labels, whatever the device says', async () => {
    const d = await api<{ labels: Record<string, string> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${devs[0].id}`,
    );
    assert.equal(d.labels.ring, 'canary', 'enrollment: the token wins');
    const r = await req(ts, 'POST', '/v1/checkin', {
      token: devs[0].token,
      body: body([comp], { labels: { ring: 'broad', role: 'primary' } }),
    });
    assert.equal(r.status, 200);
    const after = await api<{ labels: Record<string, string> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${devs[0].id}`,
    );
    assert.deepEqual(after.labels, { ring: 'canary', role: 'primary' });
  });

  it('cannot grow its labels without bound', async () => {
    for (let i = 0; i < 5; i++) {
      const labels = Object.fromEntries(Array.from({ length: 7 }, (_, j) => [`k${i}-${j}`, 'v']));
      const r = await req(ts, 'POST', '/v1/checkin', {
        token: devs[0].token,
        body: body([comp], { labels }),
      });
      assert.equal(r.status, 200, 'replacing its own labels is fine');
    }
    const d = await api<{ labels: Record<string, string> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${devs[0].id}`,
    );
    assert.equal(Object.keys(d.labels).length, 8, 'the last 7 own labels and the enrollment label');
    const labels = Object.fromEntries(Array.from({ length: 8 }, (_, j) => [`z${j}`, 'v']));
    const r = await req(ts, 'POST', '/v1/checkin', { token: devs[0].token, body: body([comp], { labels }) });
    assert.equal(r.status, 400);
    assert.match(String(r.body?.message), /at most 8 entries/);
    const bad = await req(ts, 'POST', '/v1/checkin', {
      token: devs[0].token,
      body: body([comp], { labels: { 'x\u001b[31m': 'v' } }),
    });
    assert.equal(bad.status, 400, 'label keys are plain names');
  });

  it('drops reports for transactions it was never offered, without storing them', async () => {
    const reports = Array.from({ length: 200 }, (_, i) => ({
      txn_id: `fake-${i}`,
      component: 'app',
      version: `9.${i}`,
      outcome: 'failed',
      reason: 'spam',
    }));
    const r = await req(ts, 'POST', '/v1/checkin', { token: devs[0].token, body: body([comp], { reports }) });
    assert.equal(r.status, 200);
    assert.equal(
      (r.body?.acked as string[] | undefined)?.length,
      200,
      'acknowledged, so an honest agent would stop resending',
    );
    const audit = await api<Array<{ action: string; subject: string }>>(
      ts.conn,
      'GET',
      `/v1/admin/audit?subject=device/${devs[0].id}&limit=1000`,
    );
    assert.equal(audit.filter((a) => a.action === 'device.failed').length, 0);
    const metrics = await (await fetch(new URL('/metrics', ts.url))).text();
    assert.match(metrics, /ringfence_reports_dropped_total\{reason="unoffered"\} 200/);
  });

  it('keeps only its hourly quota of reports and audit rows, and says once that it was throttled', async () => {
    // Pinned: the device was offered app@1, so these reports are for an offered release.
    await api(ts.conn, 'POST', '/v1/admin/fleet/pin', { selector: `id=${devs[0].id}`, release: 'app@1' });
    const reports = Array.from({ length: 6 }, (_, i) => ({
      txn_id: `quota-${i}`,
      component: 'app',
      version: '1',
      outcome: 'failed',
      reason: 'health',
    }));
    const r = await req(ts, 'POST', '/v1/checkin', { token: devs[0].token, body: body([comp], { reports }) });
    assert.equal(r.status, 200);
    const audit = await api<Array<{ action: string }>>(
      ts.conn,
      'GET',
      `/v1/admin/audit?subject=device/${devs[0].id}&limit=1000`,
    );
    assert.equal(audit.filter((a) => a.action === 'device.failed').length, 2, 'audit quota');
    assert.equal(
      audit.filter((a) => a.action === 'device.throttled').length,
      2,
      'once for reports, once for audit',
    );
    const metrics = await (await fetch(new URL('/metrics', ts.url))).text();
    assert.match(metrics, /ringfence_reports_dropped_total\{reason="quota"\} 3/);
  });

  it('cannot check in faster than its rate; another device is not affected', async () => {
    let limited = 0;
    for (let i = 0; i < 60 && limited === 0; i++) {
      const r = await req(ts, 'POST', '/v1/checkin', { token: devs[0].token, body: body([comp]) });
      if (r.status === 429) limited++;
      else assert.equal(r.status, 200);
    }
    assert.equal(limited, 1, 'the burst ran out');
    const other = await req(ts, 'POST', '/v1/checkin', { token: devs[1].token, body: body([comp]) });
    assert.equal(other.status, 200);
  });

  it('cannot invent components: names are plain, and at most 64 are kept per device', async () => {
    const odd = await req(ts, 'POST', '/v1/checkin', {
      token: devs[1].token,
      body: body([{ name: '../x\u001b', version: null, state: 'idle' }]),
    });
    assert.equal(odd.status, 400);
    let refused = 0;
    for (let round = 0; round < 3 && refused === 0; round++) {
      const components = Array.from({ length: 30 }, (_, i) => ({
        name: `c${round}-${i}`,
        version: null,
        state: 'idle',
      }));
      const r = await req(ts, 'POST', '/v1/checkin', { token: devs[1].token, body: body(components) });
      if (r.status === 400) {
        refused++;
        assert.match(String(r.body?.message), /at most 64 components per device/);
      } else assert.equal(r.status, 200);
    }
    assert.equal(refused, 1, 'the third batch of 30 new names would pass 64');
    const d = await api<{ components: unknown[] }>(ts.conn, 'GET', `/v1/admin/devices/${devs[1].id}`);
    assert.ok(d.components.length <= 64);
  });

  it('answers 400 to deeply nested health and report detail', async () => {
    for (const b of [
      `{"components":[{"name":"app","state":"idle","health":${deep(100_000)}}]}`,
      `{"components":[],"reports":[{"txn_id":"d","component":"app","version":"1","outcome":"failed","detail":${deep(50)}}]}`,
    ]) {
      const r = await req(ts, 'POST', '/v1/checkin', { token: devs[1].token, raw: b });
      assert.equal(r.status, 400);
    }
  });

  it('stores an oversized health object as a marker, not as sent', async () => {
    const health = { blob: 'x'.repeat(20_000) };
    const r = await req(ts, 'POST', '/v1/checkin', {
      token: devs[1].token,
      body: body([{ ...comp, health }]),
    });
    assert.equal(r.status, 200);
    const d = await api<{ components: Array<{ health: Record<string, unknown> }> }>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${devs[1].id}`,
    );
    assert.equal(d.components[0].health.truncated, true);
  });
});

describe('enrollment, names, blobs and retirement', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ limits: { failedAuthBurst: 5, failedAuthPerIpPerMinute: 1 } });
  });
  after(() => ts.close());

  it('refuses a second device with the same name (409), and device names must be printable', async () => {
    const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: 5 });
    const first = await req(ts, 'POST', '/v1/enroll', {
      token: null,
      body: { token: tok.token, name: 'dup' },
    });
    assert.equal(first.status, 200);
    const again = await req(ts, 'POST', '/v1/enroll', {
      token: null,
      body: { token: tok.token, name: 'dup' },
    });
    assert.equal(again.status, 409);
    const esc = await req(ts, 'POST', '/v1/enroll', {
      token: null,
      body: { token: tok.token, name: 'a\u001b]0;pwned\u0007' },
    });
    assert.equal(esc.status, 400);
    // The refused enrollments did not spend uses of the token.
    const more = await enrollDevices({ ...ts.conn }, [{}, {}, {}, {}]).catch((e: Error) => e);
    assert.ok(Array.isArray(more));
    const byName = await req(ts, 'GET', '/v1/admin/devices/dup');
    assert.equal(byName.status, 200);
    assert.equal(byName.body?.id, first.body?.device_id);
  });

  it('serves a device only blobs of approved releases', async () => {
    const [d] = await enrollDevices(ts.conn, [{}]);
    await release(ts.conn, 'ok', '1');
    const secret = Buffer.from('unapproved content\n');
    const up = await api<{ sha256: string }>(ts.conn, 'POST', '/v1/admin/blobs', new Uint8Array(secret));
    assert.equal(up.sha256, createHash('sha256').update(secret).digest('hex'));
    const rels = await api<Array<{ artifacts: Array<{ sha256: string }> }>>(
      ts.conn,
      'GET',
      '/v1/admin/releases',
    );
    const approved = rels[0].artifacts[0].sha256;
    assert.equal((await req(ts, 'GET', `/v1/blobs/${approved}`, { token: d.token })).status, 200);
    assert.equal((await req(ts, 'GET', `/v1/blobs/${up.sha256}`, { token: d.token })).status, 404);
    assert.equal((await req(ts, 'GET', `/v1/blobs/${up.sha256}`)).status, 200, 'the admin reads any blob');
    assert.equal((await req(ts, 'GET', `/v1/blobs/${approved}`, { token: null })).status, 401);
  });

  it('retires a device: token refused, out of rollouts, audited', async () => {
    const devs = await enrollDevices(ts.conn, [{ role: 'r' }, { role: 'r' }], 'ok');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: 'name: all\nfirst_wave_cap: 100%\nwaves:\n  - name: all\n    size: 100%\n',
    });
    await api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'ok@1', plan: 'all' });
    await until(
      () => checkin(ts.conn, devs[0], 'ok'),
      (o) => o.length === 1,
      120_000,
      'offer',
    );
    const r = await api<{ left_rollouts: number }>(
      ts.conn,
      'POST',
      `/v1/admin/devices/${devs[0].id}/retire`,
      {
        reason: 'stolen',
      },
    );
    assert.equal(r.left_rollouts, 1);
    const gone = await req(ts, 'POST', '/v1/checkin', { token: devs[0].token, body: { components: [] } });
    assert.equal(gone.status, 401);
    assert.equal((await req(ts, 'GET', `/v1/admin/devices/${devs[0].id}`)).status, 404);
    const audit = await api<Array<{ action: string; detail: { reason?: string } }>>(
      ts.conn,
      'GET',
      `/v1/admin/audit?subject=device/${devs[0].id}`,
    );
    assert.equal(audit.at(-1)?.action, 'device.retired');
    assert.equal(audit.at(-1)?.detail.reason, 'stolen');
  });

  it('throttles an address that keeps presenting bad tokens, but not known devices behind it', async () => {
    const [d] = await enrollDevices(ts.conn, [{}]);
    assert.equal(
      (await req(ts, 'POST', '/v1/checkin', { token: d.token, body: { components: [] } })).status,
      200,
    );
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++)
      statuses.push(
        (await req(ts, 'POST', '/v1/checkin', { token: `rfdev_bad${i}`, body: { components: [] } })).status,
      );
    // A burst of 5 failures (some spent by earlier tests here), then only 429s.
    const first = statuses.indexOf(429);
    assert.ok(first >= 0 && first <= 5, statuses.join(','));
    assert.ok(
      statuses.slice(0, first).every((s) => s === 401),
      statuses.join(','),
    );
    assert.ok(
      statuses.slice(first).every((s) => s === 429),
      statuses.join(','),
    );
    assert.equal((await req(ts, 'GET', '/v1/admin/devices', { token: 'rfadm_wrong' })).status, 429);
    assert.equal(
      (await req(ts, 'POST', '/v1/checkin', { token: d.token, body: { components: [] } })).status,
      200,
    );
    assert.equal((await req(ts, 'GET', '/v1/admin/devices')).status, 200, 'the real admin token still works');
    // A device the server has not seen since it started (new, or after a restart) is not locked out either.
    const [fresh] = await enrollDevices(ts.conn, [{}]);
    assert.equal(
      (await req(ts, 'POST', '/v1/checkin', { token: fresh.token, body: { components: [] } })).status,
      200,
      'a valid token always passes',
    );
  });
});

describe('connections', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ limits: { connectionsPerIp: 10, headersTimeoutS: 1, requestTimeoutS: 2 } });
  });
  after(() => ts.close());

  it('caps connections per address and closes connections that never finish their headers', async () => {
    const u = new URL(ts.url);
    const socks = Array.from({ length: 14 }, () => {
      const s = connect(Number(u.port), u.hostname);
      const closed = new Promise<number>((resolve) => s.on('close', () => resolve(Date.now())));
      s.on('error', () => {});
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n'); // never finished
      return { s, closed };
    });
    try {
      const start = Date.now();
      // The 4 over the cap are closed at once; the 10 slow ones when the headers timeout (1 s) passes.
      const closedAt = await Promise.all(socks.map((x) => x.closed));
      assert.ok(closedAt.every((t) => t - start < 20_000));
      const h = await fetch(new URL('/healthz', ts.url));
      assert.equal(h.status, 200, 'the server is still serving');
      const m = await (await fetch(new URL('/metrics', ts.url))).text();
      assert.match(m, /ringfence_throttled_total\{what="connections"\} [1-9]/);
    } finally {
      for (const x of socks) x.s.destroy();
    }
  });
});

describe('the admin plugin', () => {
  it('refuses to start a server with an admin route outside the admin plugin', async () => {
    const Fastify = (await import('fastify')).default;
    const { assertAdminScope } = await import('../src/server/plugins/admin.ts');
    const app = Fastify();
    assertAdminScope(app);
    assert.throws(
      () => app.get('/v1/admin/stray', async () => 'open'),
      /registered outside the admin plugin/,
    );
    await app.close();
  });
});

describe('the initial admin token', () => {
  it('must be strong: short or repetitive tokens are refused and nothing is created', async () => {
    const { mkdtempSync, rmSync, existsSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const pino = (await import('pino')).default;
    const { createServer } = await import('../src/server/app.ts');
    const dir = mkdtempSync(join(tmpdir(), 'rf-weak-'));
    try {
      for (const [token, why] of [
        ['admin', /at least 32/],
        ['a'.repeat(40), /too few different characters/],
      ] as const) {
        await assert.rejects(
          createServer({
            dataDir: join(dir, 'data'),
            logger: pino({ level: 'silent' }),
            initialAdminToken: token,
          }),
          why,
        );
      }
      const ok = await createServer({
        dataDir: join(dir, 'data'),
        logger: pino({ level: 'silent' }),
        initialAdminToken: 'rfadm_0123456789abcdefghijklmnopqrstuvwxyz',
      });
      assert.equal(ok.newAdminToken, null, 'a token the operator chose is never printed');
      assert.equal(ok.adminTokenFromEnv, true);
      await ok.close();
      assert.ok(existsSync(join(dir, 'data')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
