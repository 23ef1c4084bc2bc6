// The OpenAPI document (/v1/openapi.json) against the running server: it is a well-formed OpenAPI 3.1 document
// (checked structurally with Ajv: no OpenAPI validator is installed), every registered route is in it with an
// operationId, a summary, a 2xx answer and the error body, and the answers real requests get match the response
// schemas it publishes. The views are also compared with what the services build, so a field a response schema
// forgot (Fastify's serializer would drop it) fails here rather than vanishing from the API.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { listAudit } from '../src/server/db/audit.ts';
import { WILDCARD_PARAM } from '../src/server/openapi.ts';
import { deviceHistory, paging, rolloutDevices } from '../src/server/services/history.ts';
import { plansWithTimes } from '../src/server/services/plans.ts';
import { releaseViews } from '../src/server/services/releases.ts';
import { rolloutView, rolloutViews } from '../src/server/services/rollout-view.ts';
import { checkin, enrollDevices, release, startRollout } from './helpers/protocol-device.ts';
import { routesOf } from './helpers/routes.ts';
import { callAs, startTestServer, type TestServer, until } from './helpers/server.ts';

type Json = Record<string, unknown>;
interface Operation {
  operationId?: string;
  summary?: string;
  parameters?: Array<{ name: string; in: string; required?: boolean }>;
  responses?: Record<string, { description?: string; content?: Record<string, { schema?: unknown }> }>;
}
type Doc = {
  openapi: string;
  info: Json;
  components: Json;
  paths: Record<string, Record<string, Operation>>;
};

/** Routes deliberately left out of the document, and why. */
const HIDDEN: Record<string, string> = {
  'GET /': 'the dashboard page (HTML), not API',
  'GET /index.html': 'the dashboard page (HTML), not API',
  'GET /assets/:name': "the dashboard's built files, not API",
};

/** Operations whose success has no body (the FleetLock protocol answers a bare 200). */
const BODILESS = ['POST /fleetlock/v1/pre-reboot', 'POST /fleetlock/v1/steady-state'];

const PLAN = `name: contract
first_wave_cap: 100%
waves:
  - name: all
    size: 100%
`;

/** A Fastify URL as the document writes it (`:id` → `{id}`, a trailing `*` → `{path}`). */
/** The value at a local JSON pointer (`#/components/schemas/Error`), or undefined. */
function pointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  let at: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof at !== 'object' || at === null || !Object.hasOwn(at, key)) return undefined;
    at = (at as Json)[key];
  }
  return at;
}

/** Every `$ref` in the document, with where it is. */
function refs(node: unknown, at = '#', out: Array<{ at: string; ref: string }> = []) {
  if (Array.isArray(node)) {
    for (const [i, v] of node.entries()) refs(v, `${at}/${i}`, out);
  } else if (typeof node === 'object' && node !== null)
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push({ at, ref: v });
      else refs(v, `${at}/${k}`, out);
    }
  return out;
}

/** A schema with its local `$ref`s replaced by what they point at (the document has no recursive schemas). */
function inline(doc: unknown, node: unknown): unknown {
  if (Array.isArray(node)) return node.map((v) => inline(doc, v));
  if (typeof node !== 'object' || node === null) return node;
  const o = node as Json;
  if (typeof o.$ref === 'string') return inline(doc, pointer(doc, o.$ref));
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, inline(doc, v)]));
}

/** The OpenAPI 3.1 structure the document must have (the parts clients and generators rely on). */
const DOCUMENT_SHAPE = {
  type: 'object',
  required: ['openapi', 'info', 'paths', 'components'],
  properties: {
    openapi: { const: '3.1.0' },
    info: { type: 'object', required: ['title', 'version'] },
    components: {
      type: 'object',
      required: ['schemas', 'securitySchemes'],
      properties: { schemas: { type: 'object', required: ['Error'] } },
    },
    paths: {
      type: 'object',
      propertyNames: { pattern: '^/' },
      additionalProperties: {
        type: 'object',
        propertyNames: { enum: ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'] },
        additionalProperties: {
          type: 'object',
          required: ['operationId', 'summary', 'responses', 'tags'],
          properties: {
            operationId: { type: 'string', pattern: '^[a-z][A-Za-z0-9]*$' },
            summary: { type: 'string', minLength: 5 },
            tags: { type: 'array', minItems: 1, items: { type: 'string' } },
            parameters: {
              type: 'array',
              items: {
                type: 'object',
                required: ['name', 'in', 'schema'],
                properties: { in: { enum: ['path', 'query', 'header', 'cookie'] } },
              },
            },
            requestBody: { type: 'object', required: ['content'] },
            responses: {
              type: 'object',
              minProperties: 1,
              propertyNames: { pattern: '^([1-5][0-9][0-9]|[1-5]XX|default)$' },
              additionalProperties: {
                type: 'object',
                required: ['description'],
                properties: { content: { type: 'object', additionalProperties: { type: 'object' } } },
              },
            },
          },
        },
      },
    },
  },
} as const;

describe('the OpenAPI document', { timeout: 120_000 }, () => {
  let ts: TestServer;
  let doc: Doc;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const admin = () => ts.conn.token;

  before(async () => {
    ts = await startTestServer({ fleetLock: { enabled: true } });
    const res = await fetch(new URL('/v1/openapi.json', ts.url));
    assert.equal(res.status, 200);
    doc = (await res.json()) as Doc;
  });
  after(() => ts?.close());

  const operations = () =>
    Object.entries(doc.paths).flatMap(([path, item]) =>
      Object.entries(item).map(([method, op]) => ({ path, method, op })),
    );

  /** The schema the document declares for an answer (the status, else its class), local refs inlined. */
  function answerSchema(path: string, method: string, status: number): unknown {
    const op = doc.paths[path]?.[method.toLowerCase()];
    assert.ok(op, `${method} ${path} is not in the document`);
    const r = op.responses?.[String(status)] ?? op.responses?.[`${String(status)[0]}XX`];
    assert.ok(r, `${method} ${path} declares no ${status} answer`);
    const schema = r.content?.['application/json']?.schema;
    assert.ok(schema, `${method} ${path} ${status} declares no JSON schema`);
    return inline(doc, schema);
  }

  /** Calls the server and checks the answer against the schema the document declares for its status. */
  async function contract(method: string, path: string, url: string, token: string | null, body?: unknown) {
    const res = await callAs(ts.url, method, url, token, body);
    const validate = ajv.compile(answerSchema(path, method, res.status) as object);
    assert.ok(
      validate(res.body),
      `${method} ${url} → ${res.status} does not match its schema: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body).slice(0, 400)}`,
    );
    return res;
  }

  it('is a well-formed OpenAPI 3.1 document', () => {
    const validate = ajv.compile(DOCUMENT_SHAPE);
    assert.ok(validate(doc), ajv.errorsText(validate.errors, { separator: '\n' }));
  });

  it('gives every operation a unique operationId, a summary, a success answer and the error body', () => {
    const seen = new Map<string, string>();
    for (const { path, method, op } of operations()) {
      const where = `${method.toUpperCase()} ${path}`;
      const id = String(op.operationId);
      assert.ok(!seen.has(id), `operationId ${id} of ${where} is also ${seen.get(id)}'s`);
      seen.set(id, where);
      const statuses = Object.keys(op.responses ?? {});
      assert.ok(
        // A success: 2xx, or the redirect of the browser sign-in routes.
        statuses.some((s) => /^2/.test(s)) || (path.startsWith('/v1/auth/oidc/') && statuses.includes('302')),
        `${where} declares no 2xx answer`,
      );
      for (const cls of ['4XX', '5XX']) {
        const schema = op.responses?.[cls]?.content?.['application/json']?.schema as Json | undefined;
        assert.ok(schema, `${where} declares no ${cls} body`);
        // The shared error body, except FleetLock's own protocol ({kind, value}).
        const expected = path.startsWith('/fleetlock/') ? ['kind', 'value'] : ['error', 'message'];
        const props = Object.keys((inline(doc, schema) as { properties?: Json }).properties ?? {});
        assert.deepEqual(props.sort(), expected, `${where} ${cls}`);
      }
      // Every 2xx JSON answer has a schema; raw answers name their content type.
      for (const s of statuses.filter((x) => /^2\d\d$/.test(x))) {
        const content = op.responses?.[s]?.content;
        if (BODILESS.includes(where)) continue;
        assert.ok(content && Object.keys(content).length > 0, `${where} ${s} declares no content`);
        for (const [type, media] of Object.entries(content))
          assert.ok(media.schema, `${where} ${s} ${type} has no schema`);
      }
    }
    assert.ok(seen.size >= 60, `only ${seen.size} operations`);
  });

  it('compiles every schema it publishes as JSON Schema 2020-12', () => {
    const schemas: Array<{ where: string; schema: unknown }> = [];
    for (const { path, method, op } of operations()) {
      const where = `${method.toUpperCase()} ${path}`;
      for (const p of op.parameters ?? []) schemas.push({ where: `${where} ${p.name}`, schema: p });
      const body = (op as { requestBody?: { content: Record<string, { schema: unknown }> } }).requestBody;
      for (const [t, m] of Object.entries(body?.content ?? {}))
        schemas.push({ where: `${where} ${t}`, schema: m });
      for (const [s, r] of Object.entries(op.responses ?? {}))
        for (const [t, m] of Object.entries(r.content ?? {}))
          schemas.push({ where: `${where} ${s} ${t}`, schema: m });
    }
    for (const { where, schema } of schemas) {
      const s = inline(doc, (schema as { schema: unknown }).schema);
      assert.doesNotThrow(() => ajv.compile(s as object), where);
    }
  });

  it('resolves every $ref', () => {
    const all = refs(doc);
    assert.ok(all.length > 0);
    for (const { at, ref } of all)
      assert.ok(pointer(doc, ref) !== undefined, `${at}: ${ref} resolves to nothing`);
  });

  it('declares exactly the path parameters each path template names', () => {
    for (const { path, method, op } of operations()) {
      const named = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      const declared = (op.parameters ?? []).filter((p) => p.in === 'path');
      assert.deepEqual(declared.map((p) => p.name).sort(), named, `${method.toUpperCase()} ${path}`);
      for (const p of declared) assert.equal(p.required, true, `${path} ${p.name} must be required`);
      assert.doesNotMatch(path, /[:*]/, `${path} is not a template`);
    }
    assert.ok(doc.paths['/v1/blobs/{sha256}']?.get, 'the blob download path');
    assert.ok(doc.paths[`/v1/tuf/targets/{${WILDCARD_PARAM}}`]?.get, 'the TUF target path');
  });

  it('has every route the server registered, except the ones hidden on purpose', () => {
    const app = ts.srv.app;
    // The route tree counts the routes (its printout loses a wildcard's prefix, so it does not name them all).
    const routes = routesOf(app.printRoutes({ commonPrefix: false })).map((r) => `${r.method} ${r.url}`);
    assert.ok(routes.length >= 60, `only ${routes.length} routes found`);
    for (const hidden of Object.keys(HIDDEN)) {
      const [method, url] = hidden.split(' ');
      assert.ok(app.findRoute({ method: method as 'GET', url }), `${hidden} no longer exists`);
    }
    // Every documented operation is a route of the server, each a different one...
    const documented = operations().map(({ path, method }) => ({
      method: method.toUpperCase(),
      url: path.replace(`{${WILDCARD_PARAM}}`, '*').replace(/\{(\w+)\}/g, ':$1'),
    }));
    for (const { method, url } of documented)
      assert.ok(
        app.findRoute({ method: method as 'GET', url }),
        `${method} ${url} is documented, not registered`,
      );
    assert.equal(new Set(documented.map((d) => `${d.method} ${d.url}`)).size, documented.length);
    // ...and they are as many as the registered ones less those hidden: none is missing.
    assert.equal(documented.length, routes.length - Object.keys(HIDDEN).length);
    const named = new Set(documented.map((d) => `${d.method} ${d.url}`));
    assert.deepEqual(
      routes.filter((r) => !Object.hasOwn(HIDDEN, r) && !named.has(r) && !r.endsWith(' /*')),
      [],
      'registered, not documented',
    );
  });

  it("describes the server's real answers, and drops nothing the services return", async () => {
    const { db } = ts.srv.ctx.store;
    const gov = ts.srv.ctx.governance;
    const json = (v: unknown) => JSON.parse(JSON.stringify(v));

    // A fleet with a device that ran a rollout, so every view has content.
    const [dev] = await enrollDevices(ts.conn, [{ ring: 'canary' }], 'app');
    await release(ts.conn, 'app', '1.0');
    await contract('POST', '/v1/admin/plans', '/v1/admin/plans', admin(), { source: PLAN });
    const dry = await contract('POST', '/v1/admin/rollouts', '/v1/admin/rollouts', admin(), {
      release: 'app@1.0',
      plan: 'contract',
      dry_run: true,
    });
    assert.equal(dry.status, 200);
    const id = await startRollout(ts.conn, 'app@1.0', 'contract');
    const offers = await checkin(ts.conn, dev, 'app');
    assert.equal(offers[0]?.version, '1.0');
    dev.version = '1.0';
    await checkin(ts.conn, dev, 'app', [
      { txn_id: 'contract-1', component: 'app', version: '1.0', outcome: 'succeeded' },
    ]);
    // Settled (the driver no longer touches it), so the server's answer and the service's view are the same.
    await until(
      async () => (await rolloutView(db, id, gov)).status,
      (s) => s === 'completed',
      30_000,
      'the rollout to complete',
    );
    await callAs(ts.url, 'PUT', '/v1/admin/locks/workers', admin(), { slots: 1, lease_ms: 60_000 });
    await callAs(ts.url, 'POST', '/v1/admin/webhooks', admin(), {
      url: 'http://127.0.0.1:9/hook',
      events: ['rollout.completed'],
    });

    const rollout = await contract('GET', '/v1/admin/rollouts/{id}', `/v1/admin/rollouts/${id}`, admin());
    assert.deepEqual(rollout.body, json(await rolloutView(db, id, gov)));
    const rollouts = await contract('GET', '/v1/admin/rollouts', '/v1/admin/rollouts', admin());
    assert.deepEqual(rollouts.body, json(await rolloutViews(db, gov)));
    const releases = await contract('GET', '/v1/admin/releases', '/v1/admin/releases', admin());
    assert.deepEqual(releases.body, json(await releaseViews(db, gov)));
    const plans = await contract('GET', '/v1/admin/plans', '/v1/admin/plans', admin());
    assert.deepEqual(plans.body, json(await plansWithTimes(db)));
    const audit = await contract('GET', '/v1/admin/audit', '/v1/admin/audit?limit=1000', admin());
    assert.deepEqual(audit.body, json(await listAudit(db, { limit: 1000 })));
    const devices = await contract(
      'GET',
      '/v1/admin/rollouts/{id}/devices',
      `/v1/admin/rollouts/${id}/devices`,
      admin(),
    );
    assert.deepEqual(
      devices.body,
      json(await rolloutDevices(db, id, undefined, paging({ limit: 100, offset: 0 }))),
    );
    const history = await contract(
      'GET',
      '/v1/admin/devices/{id}/history',
      `/v1/admin/devices/${dev.id}/history`,
      admin(),
    );
    assert.deepEqual(history.body, json(await deviceHistory(db, dev.id, paging({ limit: 100, offset: 0 }))));

    const list = await contract('GET', '/v1/admin/devices', '/v1/admin/devices', admin());
    const one = await contract('GET', '/v1/admin/devices/{id}', `/v1/admin/devices/${dev.id}`, admin());
    assert.deepEqual((list.body as unknown as Json[])[0], one.body);
    assert.equal((one.body.components as Json[])[0].version, '1.0');
    const verify = await contract('GET', '/v1/admin/audit/verify', '/v1/admin/audit/verify', admin());
    assert.equal(verify.body.ok, true);
    assert.equal(verify.body.brokenAt, null);
    for (const [path, url] of [
      ['/v1/admin/whoami', '/v1/admin/whoami'],
      ['/v1/admin/operators', '/v1/admin/operators'],
      ['/v1/admin/locks', '/v1/admin/locks'],
      ['/v1/admin/webhooks', '/v1/admin/webhooks'],
      ['/v1/auth/oidc', '/v1/auth/oidc'],
      ['/healthz', '/healthz'],
    ])
      await contract('GET', path, url, path.startsWith('/v1/admin/') ? admin() : null);
    const locks = await callAs(ts.url, 'GET', '/v1/admin/locks', admin());
    assert.ok((locks.body.groups as Json[]).some((g) => g.name === 'workers' && g.slots === 1));

    // Actions and their answers (the selector routes, an operator's lifecycle, a rollout action).
    await contract('POST', '/v1/admin/fleet/hold', '/v1/admin/fleet/hold', admin(), {
      selector: 'ring=canary',
    });
    await contract('POST', '/v1/admin/fleet/unhold', '/v1/admin/fleet/unhold', admin(), {
      selector: 'ring=canary',
    });
    const added = await contract('POST', '/v1/admin/operators', '/v1/admin/operators', admin(), {
      name: 'carol',
      role: 'viewer',
    });
    assert.equal(added.status, 201);
    const token = await contract(
      'POST',
      '/v1/admin/operators/{name}/tokens',
      '/v1/admin/operators/carol/tokens',
      admin(),
      { name: 'ci' },
    );
    assert.equal(token.body.expires_at, null);
    await contract('POST', '/v1/admin/enroll-tokens', '/v1/admin/enroll-tokens', admin(), {});

    // Errors: the shared body, from validation, authentication, permission and a missing object.
    const errors: Array<[string, string, string, string | null, unknown?]> = [
      ['GET', '/v1/admin/rollouts/{id}', '/v1/admin/rollouts/999', admin()],
      ['GET', '/v1/admin/rollouts/{id}', '/v1/admin/rollouts/x', admin()],
      ['GET', '/v1/admin/devices', '/v1/admin/devices', null],
      ['GET', '/v1/admin/operators', '/v1/admin/operators', String(added.body.token)],
      ['POST', '/v1/admin/fleet/hold', '/v1/admin/fleet/hold', admin(), { nope: 1 }],
      ['POST', '/v1/checkin', '/v1/checkin', null, { components: [] }],
    ];
    for (const [method, path, url, tok, body] of errors) {
      const r = await contract(method, path, url, tok, body);
      assert.ok(r.status >= 400 && r.status < 500, `${url}: ${r.status}`);
    }
    // FleetLock answers its own protocol's errors.
    const fl = await fetch(new URL('/fleetlock/v1/pre-reboot', ts.url), { method: 'POST', body: '{}' });
    const flSchema = ajv.compile(answerSchema('/fleetlock/v1/pre-reboot', 'POST', fl.status) as object);
    assert.ok(flSchema(await fl.json()), ajv.errorsText(flSchema.errors));
  });

  it('declares the content type of the raw answers it sends', async () => {
    const blob = await fetch(new URL('/v1/admin/blobs', ts.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${admin()}`, 'content-type': 'application/octet-stream' },
      body: 'raw bytes\n',
    });
    const { sha256 } = (await blob.json()) as { sha256: string };
    const got = await fetch(new URL(`/v1/blobs/${sha256}`, ts.url), {
      headers: { authorization: `Bearer ${admin()}` },
    });
    assert.equal(await got.text(), 'raw bytes\n');
    const declared = doc.paths['/v1/blobs/{sha256}'].get.responses?.['200'].content ?? {};
    assert.deepEqual(Object.keys(declared), [got.headers.get('content-type')]);
    const metrics = await fetch(new URL('/metrics', ts.url));
    const type = Object.keys(doc.paths['/metrics'].get.responses?.['200'].content ?? {});
    assert.deepEqual(type, ['text/plain']);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(await metrics.text(), /ringfence_checkins_total/);
    const upload = (doc.paths['/v1/admin/blobs'].post as { requestBody?: { content: Json } }).requestBody;
    assert.deepEqual(Object.keys(upload?.content ?? {}), ['application/octet-stream']);
  });
});
