// The metric-gate evaluator's strict reading of Prometheus answers, against a hostile HTTP server on loopback
// (oversize, slow, wrong shapes), and the server.yaml `prometheus:` section.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsePlan } from '../src/engine/plan.ts';
import { loadServerConfig, prometheusOf } from '../src/server/config.ts';
import {
  metricGatesRefusal,
  parseQueryAnswer,
  queryPrometheus,
} from '../src/server/services/metric-gates.ts';

const ok = (data: unknown) => JSON.stringify({ status: 'success', data });

describe('parseQueryAnswer', () => {
  it('takes a scalar or a one-sample vector with a finite value', () => {
    assert.deepEqual(parseQueryAnswer(ok({ resultType: 'scalar', result: [1, '0.5'] })), { value: 0.5 });
    assert.deepEqual(
      parseQueryAnswer(ok({ resultType: 'vector', result: [{ metric: {}, value: [1, '-2e-3'] }] })),
      { value: -0.002 },
    );
  });

  it('refuses everything else with a reason', () => {
    const refused: Array<[string, RegExp]> = [
      ['not json', /not JSON/],
      ['[1]', /query failed/],
      [JSON.stringify({ status: 'error', error: 'parse error at char 3' }), /parse error at char 3/],
      [ok({ resultType: 'vector', result: [] }), /0 series/],
      [ok({ resultType: 'vector', result: [{ value: [1, '1'] }, { value: [1, '2'] }] }), /2 series/],
      [ok({ resultType: 'matrix', result: [] }), /result type "matrix"/],
      [ok({ resultType: 'scalar', result: [1, 'NaN'] }), /not finite/],
      [ok({ resultType: 'scalar', result: [1, '+Inf'] }), /not finite/],
      [ok({ resultType: 'scalar', result: [1, ''] }), /not finite/],
      [ok({ resultType: 'scalar', result: [1, 3] }), /malformed sample/],
      [ok({ resultType: 'vector', result: [null] }), /malformed sample/],
    ];
    for (const [text, why] of refused) {
      const r = parseQueryAnswer(text);
      assert.equal(r.value, null, text);
      assert.match(r.error ?? '', why, text);
    }
  });
});

describe('queryPrometheus over HTTP', () => {
  let srv: Server;
  let url: string;
  const seen: Array<{ url: string; auth: string | undefined }> = [];
  before(async () => {
    srv = createServer((req, res) => {
      seen.push({ url: req.url ?? '', auth: req.headers.authorization });
      const q = new URL(req.url ?? '/', 'http://x').searchParams.get('query');
      if (q === 'big') {
        res.end(`{"x":"${'a'.repeat(2 * 1024 * 1024)}"}`);
      } else if (q === 'slow') {
        setTimeout(() => res.end(ok({ resultType: 'scalar', result: [1, '1'] })), 3000).unref();
      } else if (q === 'teapot') {
        res.writeHead(503).end(ok({ resultType: 'scalar', result: [1, '1'] }));
      } else res.end(ok({ resultType: 'scalar', result: [1, '0.25'] }));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  });
  after(async () => {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
  });

  it('sends the query encoded with the configured headers, and reads the value', async () => {
    const p = { url, timeoutMs: 1000, headers: { Authorization: 'Bearer s3cret' } };
    assert.deepEqual(await queryPrometheus(p, 'sum(rate(x{a="b"}[5m]))'), { value: 0.25 });
    assert.equal(seen.at(-1)?.auth, 'Bearer s3cret');
    assert.equal(
      new URL(seen.at(-1)?.url ?? '', 'http://x').searchParams.get('query'),
      'sum(rate(x{a="b"}[5m]))',
    );
  });

  it('gives no value for oversize, slow, HTTP errors and unreachable servers', async () => {
    const p = { url, timeoutMs: 500, headers: {} };
    assert.match((await queryPrometheus(p, 'big')).error ?? '', /larger than 1048576 bytes/);
    assert.match((await queryPrometheus(p, 'slow')).error ?? '', /no answer within 500 ms/);
    assert.match((await queryPrometheus(p, 'teapot')).error ?? '', /HTTP 503/);
    // A port nobody listens on: taken, then released.
    const spare = createServer();
    await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
    const port = (spare.address() as AddressInfo).port;
    await new Promise((r) => spare.close(r));
    const dead = { url: `http://127.0.0.1:${port}`, timeoutMs: 500, headers: {} };
    assert.match((await queryPrometheus(dead, 'up')).error ?? '', /unreachable: ECONNREFUSED/);
  });
});

describe('server.yaml prometheus', () => {
  it('is off by default, reads url, timeout and a headers file, and refuses bad ones', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-gates-cfg-'));
    try {
      assert.equal(prometheusOf(loadServerConfig(dir).config, dir), null);
      writeFileSync(join(dir, 'h'), '# comment\nAuthorization: Bearer abc\nX-Scope-OrgID: team-1\n');
      writeFileSync(
        join(dir, 'server.yaml'),
        'prometheus:\n  url: http://127.0.0.1:9090/\n  timeout: 2s\n  headers_file: h\n',
      );
      assert.deepEqual(prometheusOf(loadServerConfig(dir).config, dir), {
        url: 'http://127.0.0.1:9090',
        timeoutMs: 2000,
        headers: { Authorization: 'Bearer abc', 'X-Scope-OrgID': 'team-1' },
      });
      writeFileSync(join(dir, 'h'), 'no colon here\n');
      assert.throws(() => prometheusOf(loadServerConfig(dir).config, dir), /headers_file: .*:1: expected/);
      writeFileSync(join(dir, 'server.yaml'), 'prometheus:\n  url: ftp://x\n');
      assert.throws(() => loadServerConfig(dir), /server\.yaml:2: prometheus\.url/);
      // A password in the URL would reach error messages, and from there statuses, audit entries and webhooks.
      writeFileSync(join(dir, 'server.yaml'), 'prometheus:\n  url: http://user:secret@127.0.0.1:9090\n');
      assert.throws(() => loadServerConfig(dir), /prometheus\.url.*no credentials in the URL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a plan with metric gates is refused with no Prometheus configured', () => {
    const plan = parsePlan(
      "name: g\nwaves:\n  - name: a\n    size: 1\n    metrics: [{ name: e, query: up, comparison: '>', threshold: 0 }]\n",
    );
    assert.match(
      metricGatesRefusal(plan, null) ?? '',
      /wave a has metric gates, but server\.yaml has no prometheus/,
    );
    assert.equal(metricGatesRefusal(plan, { url: 'http://x', timeoutMs: 1, headers: {} }), null);
    assert.equal(metricGatesRefusal(parsePlan('name: p\nwaves: [{ name: a, size: 1 }]\n'), null), null);
  });
});

describe('plan apply on a server without Prometheus', () => {
  it('refuses a plan with metric gates (400), and takes the same plan without them', async () => {
    const { startTestServer } = await import('./helpers/server.ts');
    const { api } = await import('../src/cli/client.ts');
    const ts = await startTestServer();
    try {
      const gated =
        'name: gated\nwaves:\n  - name: a\n    size: 1\n    metrics:\n      - name: errors\n        query: sum(up)\n        comparison: ">"\n        threshold: 0\n';
      await assert.rejects(api(ts.conn, 'POST', '/v1/admin/plans', { source: gated }), (e: Error) =>
        /400 .*no prometheus/.test(e.message),
      );
      const plain = await api<{ name: string }>(ts.conn, 'POST', '/v1/admin/plans', {
        source: 'name: plain\nwaves:\n  - name: a\n    size: 1\n',
      });
      assert.equal(plain.name, 'plain');
    } finally {
      await ts.close();
    }
  });
});
