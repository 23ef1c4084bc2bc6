// Webhooks (issue 14): real receivers on loopback verify every signature; rollouts driven by scripted devices
// produce exactly their events with the documented schema; failures are retried with backoff under one stable
// event id; a server killed with -9 between an event and its delivery delivers it after a restart; two
// replicas on one PostgreSQL deliver each row once.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { api, type Conn } from '../src/cli/client.ts';
import { EVENTS as CLI_EVENTS } from '../src/cli/commands/webhook.ts';
import { openStore } from '../src/server/db/database.ts';
import { outboxOf } from '../src/server/db/webhooks.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { WEBHOOK_EVENTS } from '../src/server/services/webhooks.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import {
  cycle,
  enrollDevices,
  type ProtocolDevice,
  release,
  startRollout,
} from './helpers/protocol-device.ts';
import { callAs, startTestServer, type TestServer, until } from './helpers/server.ts';

const BIN = join(import.meta.dirname, '..', 'bin', 'ringfence.js');
const SECRET = 'test-secret-0123456789abcdef';
const run = promisify(execFile);

interface Received {
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown> & { id: string; type: string; rollout?: Record<string, unknown> };
}

/** The receiver's check, as docs/webhooks.md tells receivers to do it. */
function verify(secret: string, h: IncomingHttpHeaders, body: string): boolean {
  const ts = String(h['x-ringfence-timestamp']);
  const want = `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;
  return h['x-ringfence-signature'] === want && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
}

/**
 * A webhook receiver on loopback: answers each request with the next status of `answers` (the last one
 * repeats), and keeps what it received. A bad signature fails the test that reads `bad`.
 */
class Receiver {
  readonly got: Received[] = [];
  bad = 0;
  private server: Server | null = null;
  constructor(
    public answers: number[] = [200],
    readonly secret = SECRET,
  ) {}

  async listen(port = 0): Promise<number> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (!verify(this.secret, req.headers, body)) this.bad++;
        this.got.push({ at: Date.now(), headers: req.headers, body, json: JSON.parse(body) });
        const status = this.answers.length > 1 ? (this.answers.shift() as number) : this.answers[0];
        if (status >= 300 && status < 400)
          res.setHeader('location', `http://127.0.0.1:${this.port}/elsewhere`);
        res.writeHead(status).end('a body nobody reads');
      });
    });
    await new Promise<void>((r) => this.server?.listen(port, '127.0.0.1', r));
    return this.port;
  }

  get port(): number {
    const a = this.server?.address();
    if (!a || typeof a === 'string') throw new Error('the receiver is not listening');
    return a.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const addHook = (conn: Conn, url: string, events: readonly string[] = WEBHOOK_EVENTS, secret = SECRET) =>
  api<{ id: string; secret: string }>(conn, 'POST', '/v1/admin/webhooks', { url, events, secret });

interface HookView {
  id: string;
  delivered: number;
  pending: number;
  failed: number;
  last_status: number | null;
  last_error: string | null;
  last_delivered_at: number | null;
}
const hookList = async (conn: Conn) =>
  (await api<{ webhooks: HookView[] }>(conn, 'GET', '/v1/admin/webhooks')).webhooks;

const ROLLOUT_KEYS = [
  'component',
  'id',
  'plan',
  'previous_status',
  'reason',
  'status',
  'version',
  'wave',
  'wave_name',
];

describe('webhooks from rollouts and device reports', { timeout: 300_000 }, () => {
  let ts: TestServer;
  const rx = new Receiver();

  before(async () => {
    ts = await startTestServer({
      webhooks: { pollMs: 50, minBackoffMs: 200, maxBackoffMs: 1000, publicUrl: 'https://patch.example' },
      // Scripted devices check in as fast as the test drives them.
      limits: { checkinBurst: 100_000, checkinsPerDevicePerMinute: 100_000 },
    });
    await rx.listen();
    await addHook(ts.conn, rx.url);
  });
  after(async () => {
    await ts.close();
    await rx.close();
  });

  const eventsOf = (rollout: number) =>
    rx.got.filter((r) => r.json.rollout?.id === rollout).map((r) => r.json.type);

  /** Cycles devices (each reporting `outcome` for what it is offered) until the rollout satisfies `ok`. */
  async function drive(
    devs: ProtocolDevice[],
    component: string,
    id: number,
    ok: (v: RolloutView) => boolean,
    outcome: 'succeeded' | 'rolled-back' = 'succeeded',
  ): Promise<{ view: RolloutView; reports: number }> {
    let reports = 0;
    const view = await until(
      async () => {
        for (const d of devs) if ((await cycle(ts.conn, d, component, outcome)) !== null) reports++;
        return api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`);
      },
      ok,
      30_000,
      `rollout ${id}`,
    );
    return { view, reports };
  }

  it('announces awaiting-approval and completed, signed, with the documented schema', async () => {
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: gated\nfirst_wave_cap: 100%\nfour_eyes: false\nwaves:\n  - name: all\n    size: 100%\n    approval: true\n',
    });
    const devs = await enrollDevices(ts.conn, [{}, {}], 'app');
    await release(ts.conn, 'app', '1.0.0');
    const id = await startRollout(ts.conn, 'app@1.0.0', 'gated');
    await until(
      async () => eventsOf(id),
      (e) => e.length === 1,
      30_000,
      'awaiting-approval event',
    );
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${id}/approve`, {});
    await drive(devs, 'app', id, (v) => v.status === 'completed');
    await until(
      async () => eventsOf(id),
      (e) => e.length === 2,
      30_000,
      'completed event',
    );
    assert.deepEqual(eventsOf(id), ['rollout.awaiting-approval', 'rollout.completed']);

    const [waiting, done] = rx.got.filter((r) => r.json.rollout?.id === id);
    for (const r of [waiting, done]) {
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.headers['x-ringfence-event'], r.json.type);
      assert.equal(r.headers['x-ringfence-delivery'], r.json.id);
      assert.match(r.json.id, /^evt_[0-9a-f-]{36}$/);
      assert.deepEqual(Object.keys(r.json).sort(), [
        'id',
        'occurred_at',
        'rollout',
        'schema_version',
        'server',
        'type',
      ]);
      assert.equal(r.json.schema_version, 1);
      assert.equal(r.json.server, 'https://patch.example');
      assert.ok(!Number.isNaN(Date.parse(String(r.json.occurred_at))));
      assert.deepEqual(Object.keys(r.json.rollout ?? {}).sort(), ROLLOUT_KEYS);
    }
    assert.equal(rx.bad, 0, 'every signature verifies');
    assert.deepEqual(
      { ...waiting.json.rollout, reason: undefined },
      {
        id,
        component: 'app',
        version: '1.0.0',
        plan: 'gated',
        status: 'awaiting-approval',
        // The first wave waits before it starts: the rollout is at no wave yet.
        previous_status: 'pending',
        wave: -1,
        wave_name: null,
        reason: undefined,
      },
    );
    assert.equal(done.json.rollout?.status, 'completed');
  });

  it('announces a halt and every device quarantine, nothing else', async () => {
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: strict\nfirst_wave_cap: 100%\nwaves:\n  - name: all\n    size: 100%\n    max_failures: 0\n',
    });
    const devs = await enrollDevices(ts.conn, [{}, {}], 'bad');
    await release(ts.conn, 'bad', '2.0.0');
    const id = await startRollout(ts.conn, 'bad@2.0.0', 'strict');
    const { reports } = await drive(devs, 'bad', id, (v) => v.status === 'halted', 'rolled-back');
    await until(
      async () => eventsOf(id),
      (e) => e.length === 1,
      30_000,
      'halted event',
    );
    const quarantined = () =>
      rx.got.filter(
        (r) =>
          r.json.type === 'device.quarantined' &&
          (r.json.device as { component: string }).component === 'bad',
      );
    await until(
      async () => quarantined().length,
      (n) => n === reports,
      30_000,
      'one event per quarantine',
    );
    assert.deepEqual(eventsOf(id), ['rollout.halted']);
    const halted = rx.got.find((r) => r.json.rollout?.id === id);
    assert.ok(halted?.json.rollout?.reason, 'a halt says why');
    const q = quarantined()[0].json;
    assert.deepEqual(Object.keys(q).sort(), [
      'device',
      'id',
      'occurred_at',
      'schema_version',
      'server',
      'type',
    ]);
    assert.ok(devs.some((d) => d.id === (q.device as { id: string }).id));
    assert.deepEqual(
      { ...(q.device as object), id: undefined },
      {
        id: undefined,
        component: 'bad',
        version: '2.0.0',
        class: null,
        reason: null,
      },
    );
    assert.equal(rx.bad, 0);
  });

  it('announces a halt-and-rollback as rolled-back', async () => {
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: careful\nfirst_wave_cap: 100%\non_failure: halt-and-rollback\nwaves:\n  - name: all\n    size: 100%\n',
    });
    const devs = await enrollDevices(ts.conn, [{}, {}], 'svc');
    await release(ts.conn, 'svc', '1.0.0');
    const first = await startRollout(ts.conn, 'svc@1.0.0', 'careful');
    await drive(devs, 'svc', first, (v) => v.status === 'completed');
    await release(ts.conn, 'svc', '2.0.0');
    const id = await startRollout(ts.conn, 'svc@2.0.0', 'careful');
    await drive(devs, 'svc', id, (v) => v.status === 'rolled-back', 'rolled-back');
    await until(
      async () => eventsOf(id),
      (e) => e.includes('rollout.rolled-back'),
      30_000,
      'rolled-back event',
    );
    await until(
      async () => eventsOf(first),
      (e) => e.length === 1,
      30_000,
      'first completed',
    );
    assert.deepEqual(eventsOf(first), ['rollout.completed']);
    // A halt-and-rollback goes from running straight to rolling-back (not announced) and rolled-back.
    assert.deepEqual(eventsOf(id), ['rollout.rolled-back']);
    const ids = rx.got.map((r) => r.json.id);
    assert.equal(new Set(ids).size, ids.length, 'each event delivered once in a quiet run');
  });

  it('a receiver subscribed to some events gets only those', async () => {
    const only = new Receiver();
    await only.listen();
    try {
      await addHook(ts.conn, only.url, ['rollout.completed']);
      await release(ts.conn, 'web', '1.0.0');
      const devs = await enrollDevices(ts.conn, [{}], 'web');
      const id = await startRollout(ts.conn, 'web@1.0.0', 'gated');
      await until(
        async () => eventsOf(id),
        (e) => e.length === 1,
        30_000,
        'awaiting-approval',
      );
      await api(ts.conn, 'POST', `/v1/admin/rollouts/${id}/approve`, {});
      await drive(devs, 'web', id, (v) => v.status === 'completed');
      await until(
        async () => only.got.length,
        (n) => n === 1,
        30_000,
        'completed only',
      );
      assert.equal(only.got[0].json.type, 'rollout.completed');
      // The subscribed-to-everything receiver saw both events of this rollout; this one only its one.
      await until(
        async () => eventsOf(id),
        (e) => e.length === 2,
        30_000,
        'both events elsewhere',
      );
      assert.equal(only.got.length, 1);
      assert.equal(only.bad, 0);
    } finally {
      await only.close();
    }
  });
});

describe('webhook delivery: retries, give-up, API and CLI', { timeout: 300_000 }, () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({
      webhooks: { pollMs: 50, minBackoffMs: 300, maxBackoffMs: 2000, maxAttempts: 3 },
    });
  });
  after(async () => ts.close());

  it('retries a 500 with backoff under the same event id, then shows it delivered', async () => {
    const rx = new Receiver([500, 500, 200]);
    await rx.listen();
    try {
      const hook = await addHook(ts.conn, rx.url);
      const ev = await api<{ id: string }>(ts.conn, 'POST', `/v1/admin/webhooks/${hook.id}/test`, {});
      await until(
        async () => rx.got.length,
        (n) => n === 3,
        30_000,
        'three attempts',
      );
      assert.deepEqual(
        rx.got.map((r) => r.headers['x-ringfence-delivery']),
        [ev.id, ev.id, ev.id],
      );
      assert.deepEqual(new Set(rx.got.map((r) => r.json.id)), new Set([ev.id]));
      assert.equal(rx.got[0].json.type, 'webhook.test');
      assert.equal(rx.got[0].headers['x-ringfence-event'], 'webhook.test');
      // Backoff: 300 ms then 600 ms, each ±20 %.
      const gaps = [rx.got[1].at - rx.got[0].at, rx.got[2].at - rx.got[1].at];
      assert.ok(gaps[0] >= 240, `first retry after ${gaps[0]} ms`);
      assert.ok(
        gaps[1] >= 480 && gaps[1] > gaps[0] * 1.2,
        `second retry after ${gaps[1]} ms (first ${gaps[0]})`,
      );
      assert.equal(rx.bad, 0);
      const view = await until(
        async () => (await hookList(ts.conn)).find((w) => w.id === hook.id),
        (w) => w?.delivered === 1,
        10_000,
        'delivered in the list',
      );
      assert.equal(view?.pending, 0);
      assert.equal(view?.failed, 0);
      assert.equal(view?.last_status, 200);
      assert.equal(view?.last_error, null);
      assert.ok(view?.last_delivered_at);
      const metrics = await (await fetch(new URL('/metrics', ts.url))).text();
      const count = (result: string) =>
        Number(
          new RegExp(`ringfence_webhook_deliveries_total\\{result="${result}"\\} (\\d+)`).exec(metrics)?.[1],
        );
      assert.ok(count('retried') >= 2 && count('delivered') >= 1, metrics);
    } finally {
      await rx.close();
    }
  });

  it('never follows a redirect, and gives up after the last attempt', async () => {
    const rx = new Receiver([302]);
    await rx.listen();
    try {
      const hook = await addHook(ts.conn, rx.url);
      await api(ts.conn, 'POST', `/v1/admin/webhooks/${hook.id}/test`, {});
      const view = await until(
        async () => (await hookList(ts.conn)).find((w) => w.id === hook.id),
        (w) => w?.failed === 1,
        30_000,
        'given up',
      );
      assert.equal(rx.got.length, 3, 'maxAttempts attempts');
      assert.ok(
        rx.got.every((r) => r.headers['x-ringfence-delivery'] === rx.got[0].json.id),
        'only the hook was called',
      );
      assert.equal(view?.last_status, 302);
      assert.match(view?.last_error ?? '', /redirect not followed/);
      assert.equal(view?.pending, 0);
    } finally {
      await rx.close();
    }
  });

  it('records an unreachable receiver as pending with the connection error', async () => {
    const port = await freePort();
    const hook = await addHook(ts.conn, `http://127.0.0.1:${port}/nobody`);
    await api(ts.conn, 'POST', `/v1/admin/webhooks/${hook.id}/test`, {});
    const view = await until(
      async () => (await hookList(ts.conn)).find((w) => w.id === hook.id),
      (w) => w?.last_error !== null,
      10_000,
      'an attempt',
    );
    assert.match(view?.last_error ?? '', /ECONNREFUSED/);
    assert.equal(view?.last_status, null);
  });

  it('refuses bad URLs, unknown events and non-admins; never shows the secret; audits', async () => {
    const bad = async (body: unknown, re: RegExp) => {
      const r = await callAs(ts.url, 'POST', '/v1/admin/webhooks', ts.conn.token, body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(r.body.message ?? '', re);
    };
    await bad({ url: 'file:///etc/passwd', events: ['rollout.halted'] }, /http:\/\/ or https:\/\//);
    await bad({ url: 'gopher://x', events: ['rollout.halted'] }, /http:\/\/ or https:\/\//);
    await bad({ url: 'http://u:p@127.0.0.1/', events: ['rollout.halted'] }, /credentials/);
    await bad({ url: 'http://127.0.0.1/', events: ['rollout.started'] }, /unknown event "rollout.started"/);
    await bad({ url: 'http://127.0.0.1/', events: ['rollout.halted'], secret: 'short' }, /secret/);

    const viewer = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/operators', {
      name: 'vera',
      role: 'viewer',
    });
    const asViewer = await callAs(ts.url, 'POST', '/v1/admin/webhooks', viewer.token, {
      url: 'http://127.0.0.1/',
      events: ['rollout.halted'],
    });
    assert.equal(asViewer.status, 403);
    assert.equal((await callAs(ts.url, 'GET', '/v1/admin/webhooks', viewer.token)).status, 200);

    const gen = await api<{ id: string; secret: string }>(ts.conn, 'POST', '/v1/admin/webhooks', {
      url: 'http://127.0.0.1:9/x',
      events: ['rollout.halted'],
    });
    assert.match(gen.secret, /^whsec_/, 'a secret is generated when none is given');
    const list = JSON.stringify(await api(ts.conn, 'GET', '/v1/admin/webhooks'));
    assert.ok(!list.includes(gen.secret) && !list.includes(SECRET), 'no secret in the list');

    assert.equal((await callAs(ts.url, 'DELETE', `/v1/admin/webhooks/${gen.id}`, viewer.token)).status, 403);
    assert.equal((await callAs(ts.url, 'DELETE', `/v1/admin/webhooks/${gen.id}`, ts.conn.token)).status, 200);
    assert.equal((await callAs(ts.url, 'DELETE', `/v1/admin/webhooks/${gen.id}`, ts.conn.token)).status, 404);
    const audit = await api<{ action: string; subject: string }[]>(
      ts.conn,
      'GET',
      '/v1/admin/audit?limit=1000',
    );
    const mine = audit.filter((e) => e.subject === `webhook/${gen.id}`).map((e) => e.action);
    assert.deepEqual(mine, ['webhook.added', 'webhook.removed']);
    assert.ok(!JSON.stringify(audit).includes(gen.secret), 'no secret in the audit log');
  });

  it('CLI: add with --secret-file, list, test, remove; bad events are usage errors', async () => {
    assert.deepEqual([...CLI_EVENTS], [...WEBHOOK_EVENTS], 'the CLI knows the server’s events');
    const dir = mkdtempSync(join(tmpdir(), 'rf-hook-'));
    const rx = new Receiver([200], 'cli-secret-0123456789abcdef');
    await rx.listen();
    const env = { ...process.env, RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token, CI: 'true' };
    const cli = async (...args: string[]) => {
      try {
        const r = await run(process.execPath, [BIN, ...args], { env });
        return { code: 0, out: r.stdout, err: r.stderr };
      } catch (e) {
        const x = e as { code: number; stdout: string; stderr: string };
        return { code: x.code, out: x.stdout, err: x.stderr };
      }
    };
    try {
      writeFileSync(join(dir, 'hook.key'), `${rx.secret}\n`, { mode: 0o600 });
      const bad = await cli('webhook', 'add', rx.url, '--events', 'rollout.halted,rollout.oops');
      assert.equal(bad.code, 2, bad.err);
      assert.match(bad.err, /unknown event "rollout.oops"/);
      assert.equal((await cli('webhook', 'add', 'ftp://x/', '--events', 'rollout.halted')).code, 2);
      const add = await cli(
        'webhook',
        'add',
        rx.url,
        '--events',
        'rollout.halted,device.quarantined',
        '--secret-file',
        join(dir, 'hook.key'),
        '--json',
      );
      assert.equal(add.code, 0, add.err);
      const id = (JSON.parse(add.out) as { id: string }).id;
      const test = await cli('webhook', 'test', id, '--json');
      assert.equal(test.code, 0, test.err);
      const ev = (JSON.parse(test.out) as { id: string }).id;
      await until(
        async () => rx.got.length,
        (n) => n === 1,
        10_000,
        'the test event',
      );
      assert.equal(rx.got[0].json.id, ev);
      assert.equal(rx.bad, 0, 'signed with the secret from the file');
      const list = await until(
        async () => JSON.parse((await cli('webhook', 'list', '--json')).out) as HookView[],
        (l) => l.find((w) => w.id === id)?.delivered === 1,
        10_000,
        'listed as delivered',
      );
      assert.equal(list.find((w) => w.id === id)?.last_status, 200);
      const table = await cli('webhook', 'list');
      assert.match(table.out, /ID\s+URL\s+EVENTS\s+DELIVERED\s+PENDING\s+FAILED/);
      assert.match(table.out, new RegExp(`${id}\\s+${rx.url.replace(/[/.]/g, '\\$&')}`));
      assert.equal((await cli('webhook', 'remove', id)).code, 0);
      const gone = await cli('webhook', 'remove', id);
      assert.equal(gone.code, 1, gone.err);
      assert.match(gone.err, /no webhook/);
    } finally {
      await rx.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Uploads and approves a release on a server with four eyes on: admin imports, a second operator approves. */
async function releaseFourEyes(conn: Conn, component: string, version: string): Promise<void> {
  const bob = await api<{ token: string }>(conn, 'POST', '/v1/admin/operators', {
    name: 'bob',
    role: 'approver',
  });
  const up = await fetch(new URL('/v1/admin/blobs', conn.server), {
    method: 'POST',
    headers: { authorization: `Bearer ${conn.token}`, 'content-type': 'application/octet-stream' },
    body: `${component} ${version}\n`,
  });
  const blob = (await up.json()) as { sha256: string; length: number };
  await api(conn, 'POST', '/v1/admin/releases', {
    component,
    version,
    artifacts: [{ name: 'c.txt', ...blob }],
  });
  await api({ ...conn, token: bob.token }, 'POST', `/v1/admin/releases/${component}@${version}/approve`, {});
}

describe('kill -9 between an event and its delivery', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-hook-kill-'));
  const data = join(dir, 'data');
  const TOKEN = `adm-${randomBytes(24).toString('hex')}`;
  let proc: ChildProcess | null = null;
  after(async () => {
    await killProcess(proc);
    rmSync(dir, { recursive: true, force: true });
  });

  function startServerProcess(port: number): Promise<ChildProcess> {
    const p = spawnGroup(
      process.execPath,
      [BIN, 'server', '--data', data, '--port', String(port), '--poll', '1'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, RINGFENCE_INITIAL_ADMIN_TOKEN: TOKEN, RINGFENCE_LOG_LEVEL: 'info' },
      },
    );
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      p.stderr?.on('data', (b: Buffer) => {
        err = (err + b.toString()).slice(-4000);
      });
      p.stdout?.on('data', (b: Buffer) => {
        out = (out + b.toString()).slice(-4000);
        if (out.includes('listening')) resolve(p);
      });
      p.once('exit', (code) => reject(new Error(`server exited with ${code} before listening: ${err}`)));
    });
  }

  it('delivers the event after a restart, with the id it had before the kill', async () => {
    const port = await freePort();
    const rxPort = await freePort();
    const conn: Conn = { server: `http://127.0.0.1:${port}`, token: TOKEN };
    proc = await startServerProcess(port);
    const hook = await addHook(conn, `http://127.0.0.1:${rxPort}/hook`);
    await api(conn, 'POST', '/v1/admin/plans', {
      source:
        'name: gated\nfirst_wave_cap: 100%\nfour_eyes: false\nwaves:\n  - name: all\n    size: 100%\n    approval: true\n',
    });
    await enrollDevices(conn, [{}], 'app');
    await releaseFourEyes(conn, 'app', '1.0.0');
    const rollout = await startRollout(conn, 'app@1.0.0', 'gated');
    // The receiver is down: the event waits in the outbox after a refused attempt.
    await until(
      async () => (await hookList(conn)).find((w) => w.id === hook.id),
      (w) => w?.pending === 1 && /ECONNREFUSED/.test(w.last_error ?? ''),
      60_000,
      'a failed first attempt',
    );
    await killProcess(proc);
    proc = null;
    const store = await openStore({ dataDir: data });
    const rows = await outboxOf(store.db, hook.id);
    await store.close();
    assert.equal(rows.length, 1);
    assert.equal(rows[0].delivered_at, null);
    assert.equal(rows[0].event, 'rollout.awaiting-approval');

    proc = await startServerProcess(port);
    const rx = new Receiver();
    await rx.listen(rxPort);
    try {
      await until(
        async () => rx.got.length,
        (n) => n >= 1,
        60_000,
        'the event after the restart',
      );
      assert.equal(rx.got[0].json.id, rows[0].id, 'same id: the receiver can de-duplicate');
      assert.equal(rx.got[0].json.type, 'rollout.awaiting-approval');
      assert.equal(rx.got[0].json.rollout?.id, rollout);
      assert.equal(rx.bad, 0);
      await until(
        async () => (await hookList(conn)).find((w) => w.id === hook.id),
        (w) => w?.delivered === 1 && w.pending === 0,
        10_000,
        'delivered in the list',
      );
    } finally {
      await rx.close();
    }
  });
});

describe('two replicas on one PostgreSQL', {
  timeout: 300_000,
  skip: !pgBinDir() && 'PostgreSQL is not installed',
}, () => {
  let pg: PgCluster;
  const servers: TestServer[] = [];
  before(async () => {
    pg = await startPostgres();
  });
  after(async () => {
    for (const s of servers) await s.close();
    pg?.stop();
  });

  it('deliver each outbox row once in a quiet run', async () => {
    const opts = { databaseUrl: pg.url, webhooks: { pollMs: 10, maxConcurrent: 4 } };
    servers.push(await startTestServer(opts));
    const token = servers[0].conn.token;
    servers.push(await startTestServer({ ...opts, initialAdminToken: token }));
    const second: Conn = { server: servers[1].url, token };
    const rx = new Receiver();
    await rx.listen();
    try {
      const hook = await addHook(servers[0].conn, rx.url);
      const N = 60;
      const ids: string[] = [];
      for (let i = 0; i < N; i++) {
        const conn = i % 2 === 0 ? servers[0].conn : second;
        ids.push((await api<{ id: string }>(conn, 'POST', `/v1/admin/webhooks/${hook.id}/test`, {})).id);
      }
      await until(
        async () => rx.got.length,
        (n) => n >= N,
        60_000,
        'every event',
      );
      // A late duplicate would arrive within a few polls; wait for the outbox to say it is all delivered.
      await until(
        async () => (await hookList(second)).find((w) => w.id === hook.id),
        (w) => w?.delivered === N,
        10_000,
        'all delivered',
      );
      const got = rx.got.map((r) => r.json.id).sort();
      assert.deepEqual(got, [...ids].sort(), 'each row exactly once');
      assert.equal(rx.bad, 0);
    } finally {
      await rx.close();
    }
  });
});

guardProcesses();
