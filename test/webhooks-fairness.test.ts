// Webhook outbox fairness (issue 14 review): device events cannot crowd rollout events out of the outbox and
// repeat quarantines are queued once; a receiver that hangs or keeps failing slows only itself (per-webhook
// limit, circuit breaker); stopping the worker gives its attempts back without counting them.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Plan } from '../src/engine/plan.ts';
import { inTransaction, openStore, type Store } from '../src/server/db/database.ts';
import { outboxOf, recordAttempt } from '../src/server/db/webhooks.ts';
import { WebhookDelivery, type WebhookDeliveryOptions } from '../src/server/services/webhook-delivery.ts';
import {
  addWebhook,
  DEFAULT_OUTBOX_CAPS,
  enqueueQuarantined,
  enqueueTransitions,
  outboxRefused,
  removeWebhook,
  testWebhook,
} from '../src/server/services/webhooks.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { guardProcesses } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const log = pino({ level: 'silent' });
const SECRET = 'fairness-secret-0123456789';

/** A loopback receiver that answers `status`, or never answers at all ('hang'); counts what it got. */
class Receiver {
  got: string[] = [];
  open = 0;
  private readonly hanging = new Set<ServerResponse>();
  private server: Server | null = null;
  constructor(public mode: number | 'hang') {}

  async listen(): Promise<string> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.got.push(String(req.headers['x-ringfence-delivery']));
        if (this.mode === 'hang') {
          this.open++;
          this.hanging.add(res);
          res.on('close', () => {
            this.open--;
            this.hanging.delete(res);
          });
          return;
        }
        res.writeHead(this.mode).end();
      });
    });
    await new Promise<void>((r) => this.server?.listen(0, '127.0.0.1', r));
    const a = this.server.address() as { port: number };
    return `http://127.0.0.1:${a.port}/hook`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

const PLAN = { waves: [{ name: 'all' }] } as unknown as Plan;
const ROLLOUT = { id: 7, component: 'app', version: '2.0.0', planName: 'prod', plan: PLAN };

function caseFor(name: string, url: () => string | undefined) {
  describe(`outbox caps and de-duplication (${name})`, () => {
    let dir: string;
    let store: Store;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'rf-hookfair-'));
      store = await openStore({ dataDir: dir, url: url() });
    });
    after(async () => {
      // Later tests in this process (and servers) get the default caps back.
      new WebhookDelivery(store, log, Date.now, {});
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });

    const quarantine = (device: string, version = '2.0.0', component = 'app') =>
      inTransaction(store, (tx) =>
        enqueueQuarantined(tx, device, { component, version, reason: 'boot failed', class: null }, 1000),
      );
    const halt = (at: number) =>
      inTransaction(store, (tx) =>
        enqueueTransitions(tx, ROLLOUT, [{ from: 'running', to: 'halted', wave: 0, at, why: 'budget' }]),
      );

    it('queues a quarantine once while undelivered; device events cannot refuse rollout events', async () => {
      // A worker that is never started: only its options matter here (the caps are the process's).
      new WebhookDelivery(store, log, Date.now, { outboxCaps: { rollout: 4, other: 3 } });
      const hook = await addWebhook(store, 'admin', 1000, {
        url: 'http://127.0.0.1:9/nobody',
        events: ['rollout.halted', 'device.quarantined'],
        secret: SECRET,
      });
      const rows = () => outboxOf(store.db, hook.id);
      const devices = async () =>
        (await rows())
          .filter((r) => r.event === 'device.quarantined')
          .map((r) => JSON.parse(r.payload).device)
          .map((d: { id: string; version: string }) => `${d.id}@${d.version}`);

      await quarantine('dev-1');
      await quarantine('dev-1'); // the same news again: not queued twice
      assert.deepEqual(await devices(), ['dev-1@2.0.0']);
      await quarantine('DEV-1'); // another device (SQLite's LIKE ignores case; the check does not)
      await quarantine('dev-1', '2.0.1'); // another release
      assert.deepEqual((await devices()).sort(), ['DEV-1@2.0.0', 'dev-1@2.0.0', 'dev-1@2.0.1']);

      // The device cap (3) is full: a fourth device's event is refused and counted...
      const refused = outboxRefused();
      await quarantine('dev-2');
      assert.equal((await devices()).length, 3);
      assert.equal(outboxRefused(), refused + 1);
      // ...but a halt still gets in, up to the rollout cap of its own.
      for (let i = 0; i < 5; i++) await halt(2000 + i);
      const halts = (await rows()).filter((r) => r.event === 'rollout.halted');
      assert.equal(halts.length, 4, 'rollout events have their own cap');
      assert.equal(outboxRefused(), refused + 2);

      // Once delivered, the same quarantine is news again (a new row).
      const first = (await rows()).find((r) =>
        r.payload.includes('"id":"dev-1","component":"app","version":"2.0.0"'),
      );
      assert.ok(first);
      await recordAttempt(store.db, first.id, { attempts: 1, status: 200, error: null, deliveredAt: 3000 });
      await quarantine('dev-1');
      assert.equal((await devices()).filter((d) => d === 'dev-1@2.0.0').length, 2);
    });

    it('refuses a device id with LIKE wildcards only when it is really the same', async () => {
      new WebhookDelivery(store, log, Date.now, { outboxCaps: DEFAULT_OUTBOX_CAPS });
      const hook = await addWebhook(store, 'admin', 1000, {
        url: 'http://127.0.0.1:9/nobody',
        events: ['device.quarantined'],
        secret: SECRET,
      });
      await quarantine('d%_1', '1.0.0', 'wild');
      await quarantine('dX71', '1.0.0', 'wild'); // matches 'd%_1' as a pattern, not as a string
      await quarantine('d%_1', '1.0.0', 'wild');
      const ids = (await outboxOf(store.db, hook.id)).map((r) => JSON.parse(r.payload).device.id);
      assert.deepEqual(ids.sort(), ['d%_1', 'dX71']);
    });
  });
}

caseFor('SQLite', () => undefined);

describe('outbox caps on PostgreSQL', { skip: !pgBinDir() && 'PostgreSQL is not installed' }, () => {
  let pg: PgCluster | undefined;
  before(async () => {
    pg = await startPostgres();
  });
  after(() => pg?.stop());
  caseFor('PostgreSQL', () => pg?.url);
});

describe('delivery: slow and failing receivers, stop', { timeout: 120_000 }, () => {
  let dir: string;
  let store: Store;
  const workers: WebhookDelivery[] = [];
  const receivers: Receiver[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-hookfair-'));
    store = await openStore({ dataDir: dir });
  });
  after(async () => {
    for (const w of workers) await w.stop();
    for (const r of receivers) await r.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const worker = (o: Partial<WebhookDeliveryOptions>) => {
    const w = new WebhookDelivery(store, log, Date.now, { pollMs: 20, minBackoffMs: 60_000, ...o });
    workers.push(w);
    return w;
  };
  const receiver = async (mode: number | 'hang') => {
    const r = new Receiver(mode);
    receivers.push(r);
    const url = await r.listen();
    const hook = await addWebhook(store, 'admin', Date.now(), {
      url,
      events: ['rollout.halted'],
      secret: SECRET,
    });
    return { r, hook: hook.id };
  };
  const queue = async (hook: string, n: number) => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push((await testWebhook(store, 'admin', Date.now(), hook)).id);
    return ids;
  };

  it('a receiver that never answers holds at most its share; a healthy one gets its event at once', async () => {
    const slow = await receiver('hang');
    const ok = await receiver(200);
    // The hanging receiver's events are older: picked first by age, they would take every slot.
    await queue(slow.hook, 12);
    const [id] = await queue(ok.hook, 1);
    const w = worker({ timeoutMs: 60_000, maxConcurrent: 8 });
    const started = Date.now();
    w.start();
    await until(
      async () => ok.r.got,
      (g) => g.length === 1,
      5000,
      'the healthy receiver’s event',
    );
    assert.equal(ok.r.got[0], id);
    assert.ok(Date.now() - started < 5000);
    await until(
      async () => slow.r.open,
      (n) => n === 2,
      5000,
      'two attempts at the hanging receiver',
    );
    assert.equal(slow.r.got.length, 2, 'at most perWebhook attempts in flight per webhook');
    await w.stop();
    // Stopping gave the two hanging attempts back: nothing counted against the slow receiver's events.
    const rows = await outboxOf(store.db, slow.hook);
    assert.deepEqual(
      rows.map((r) => r.attempts),
      rows.map(() => 0),
    );
    await removeWebhook(store, 'admin', Date.now(), slow.hook);
  });

  it('after breakerFailures failures in a row, the webhook’s other events wait (not attempted)', async () => {
    const bad = await receiver(500);
    const ok = await receiver(200);
    await queue(bad.hook, 10);
    const w = worker({ perWebhook: 1, breakerFailures: 3, minBackoffMs: 60_000 });
    w.start();
    const rows = await until(
      () => outboxOf(store.db, bad.hook),
      (r) => r.filter((x) => x.attempts === 0 && x.next_attempt_at > Date.now() + 30_000).length === 7,
      10_000,
      'seven events pushed back unattempted',
    );
    assert.equal(rows.filter((x) => x.attempts === 1).length, 3);
    // The worker keeps working (a healthy receiver's event arrives), and the failing one is not called again.
    await queue(ok.hook, 1);
    await until(
      async () => ok.r.got.length,
      (n) => n === 1,
      5000,
      'the healthy receiver’s event',
    );
    assert.equal(bad.r.got.length, 3);
    // New events of the failing webhook wait too, while its circuit is open.
    await queue(bad.hook, 1);
    await queue(ok.hook, 1);
    await until(
      async () => ok.r.got.length,
      (n) => n === 2,
      5000,
      'the second healthy event',
    );
    assert.equal(bad.r.got.length, 3);
    await w.stop();
    await removeWebhook(store, 'admin', Date.now(), bad.hook);
  });

  it('stop() gives an attempt in flight back: no attempt counted, due at once, delivered after a restart', async () => {
    const rx = await receiver('hang');
    const [id] = await queue(rx.hook, 1);
    const w = worker({ timeoutMs: 60_000 });
    w.start();
    await until(
      async () => rx.r.open,
      (n) => n === 1,
      5000,
      'the attempt in flight',
    );
    await w.stop();
    const [row] = await outboxOf(store.db, rx.hook);
    assert.equal(row.id, id);
    assert.equal(row.attempts, 0, 'a stop is not a failed attempt');
    assert.equal(row.last_error, null);
    assert.ok(Number(row.next_attempt_at) <= Date.now(), 'due again at once');
    // The next worker (a restart, another replica) sends it, as its first attempt.
    rx.r.mode = 200;
    worker({}).start();
    const done = await until(
      async () => (await outboxOf(store.db, rx.hook))[0],
      (r) => r.delivered_at !== null,
      5000,
      'delivered after the restart',
    );
    assert.equal(done.attempts, 1);
    assert.deepEqual(rx.r.got, [id, id]);
  });
});

guardProcesses();
