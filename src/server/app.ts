// Builds the Fastify server: one plugin per area (device, admin, tuf, web), uniform errors from the one error
// table (errors.ts), OpenAPI and metrics.
import { join } from 'node:path';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { shareRepositoryLock } from '../trust/signer/tuf-repository.ts';
import { VERSION } from '../version.ts';
import { BlobStore } from './blobs.ts';
import { DEFAULT_GOVERNANCE, type Governance, type OidcOptions, type PrometheusOptions } from './config.ts';
import { guardEdges, timeoutOptions } from './connections.ts';
import type { ServerContext } from './context.ts';
import { openStore } from './db/database.ts';
import { LOCK_KEYS, withSharedLock } from './db/locks.ts';
import { errorAnswer } from './errors.ts';
import { DEFAULT_LIMITS, Guards, type ServerLimits } from './limits.ts';
import { countHalts, createMetrics } from './metrics.ts';
import { RelyingParty } from './oidc/relying-party.ts';
import { OPS_SCHEMAS, openApiDocument, type RouteDoc } from './openapi.ts';
import { adminPlugin, assertAdminScope } from './plugins/admin.ts';
import { devicePlugin } from './plugins/device.ts';
import { tufPlugin } from './plugins/tuf.ts';
import { webPlugin } from './plugins/web.ts';
import { RolloutDriver } from './rollout-driver.ts';
import { adminLockRoutes } from './routes/admin-locks.ts';
import { adminWebhookRoutes } from './routes/admin-webhooks.ts';
import { authOidcRoutes } from './routes/auth-oidc.ts';
import { fleetLockRoutes } from './routes/fleetlock.ts';
import { vendorTufAdminRoutes } from './routes/tuf.ts';
import { AssignmentCache } from './services/assignment-cache.ts';
import { EvidenceGateEvaluator } from './services/evidence-gates.ts';
import { DEFAULT_FLEET_LOCK, type FleetLockOptions, startLeaseSweep } from './services/fleet-lock.ts';
import { MetricGateEvaluator } from './services/metric-gates.ts';
import { Operators } from './services/operators.ts';
import { WebhookDelivery, type WebhookDeliveryOptions } from './services/webhook-delivery.ts';
import { LocalWakeBus, type WakeBus } from './wake/bus.ts';
import { WakeHub } from './wake/hub.ts';
import { PgWakeBus } from './wake/pg-bus.ts';

export { VERSION };

export interface ServerOptions {
  dataDir: string;
  databaseUrl?: string;
  logger?: Logger;
  clock?: () => number;
  pollSeconds?: number;
  tickMs?: number;
  /**
   * Used as the token `bootstrap` of operator `admin` on first start instead of a random one (automation:
   * RINGFENCE_INITIAL_ADMIN_TOKEN); must be strong. null: refuse to start on a database with no operator yet
   * (the caller could not deliver a first token).
   */
  initialAdminToken?: string | null;
  /** Limits that differ from DEFAULT_LIMITS (server.yaml `limits:`). */
  limits?: Partial<ServerLimits>;
  /** HTTPS without a proxy: PEM certificate chain and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Carries wake-up notifications (default: this process only). */
  wakeBus?: WakeBus;
  /** server.yaml `governance:` (what is not given: DEFAULT_GOVERNANCE, four eyes on). */
  governance?: Partial<Governance>;
  /** server.yaml `oidc:` (single sign-on); undefined: off. */
  oidc?: OidcOptions;
  /** server.yaml `fleet_lock:` (Zincati's reboot manager); what is not given: DEFAULT_FLEET_LOCK (off). */
  fleetLock?: Partial<FleetLockOptions>;
  /** Webhook delivery: the public URL sent in payloads, retry timing, limits (DEFAULT_DELIVERY otherwise). */
  webhooks?: Partial<WebhookDeliveryOptions>;
  /** server.yaml `prometheus:` (metric gates); null or undefined: none, gated waves halt inconclusive. */
  prometheus?: PrometheusOptions | null;
}

export interface RunningServer {
  app: FastifyInstance;
  ctx: ServerContext;
  /** Set only on the first start when the token was generated here: the admin token, to be shown once. */
  newAdminToken: string | null;
  /** True on the first start when the admin token came from `initialAdminToken` (not to be printed). */
  adminTokenFromEnv: boolean;
  close(): Promise<void>;
}

/** Opens the store and builds a ready (not yet listening) server. */
export async function createServer(opts: ServerOptions): Promise<RunningServer> {
  const log = opts.logger ?? pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'info' });
  const store = await openStore({ dataDir: opts.dataDir, url: opts.databaseUrl, log });
  const clock = opts.clock ?? Date.now;
  let admin: Awaited<ReturnType<typeof Operators.open>>;
  try {
    admin = await Operators.open(store, clock, opts.initialAdminToken);
  } catch (e) {
    await store.close();
    throw e;
  }
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  // Gauges of the database's state are read when /metrics is scraped (cached; see metrics.ts).
  const metrics = createMetrics({ store, clock, pollSeconds: opts.pollSeconds ?? 30 });
  const driver = new RolloutDriver(store, log, clock, new AssignmentCache(limits.stepCacheAssignments));
  driver.onStep(() => metrics.rolloutSteps.inc());
  // Halts are incidents kept from the rest of the fleet: counted by reason (ringfence_halts_total).
  driver.onStep((_id, out) => countHalts(metrics, out.transitions));
  // Replicas on one PostgreSQL share wake-ups (LISTEN/NOTIFY) and sign the shared TUF repository one at a time.
  let bus: WakeBus;
  try {
    bus =
      opts.wakeBus ??
      (store.dialect === 'postgres' && opts.databaseUrl
        ? await PgWakeBus.open(store.db, opts.databaseUrl, log)
        : new LocalWakeBus());
  } catch (e) {
    await store.close();
    throw e;
  }
  shareRepositoryLock(
    opts.dataDir,
    store.dialect === 'postgres' ? (fn) => withSharedLock(store, LOCK_KEYS.trustRepository, fn) : null,
  );
  const hub = new WakeHub(bus, limits.wakeMaxHeld, (n) => metrics.waitsHeld.set(n));
  // Every committed step's commands (offers, reverts, withdrawals) change what those devices are told.
  driver.onStep((_id, out) => {
    if (out.commands.length > 0) bus.notify(out.commands.map((c) => c.deviceId));
  });
  const ctx: ServerContext = {
    store,
    blobs: new BlobStore(join(opts.dataDir, 'blobs'), { log }),
    driver,
    metrics,
    log,
    clock,
    pollSeconds: opts.pollSeconds ?? 30,
    dataDir: opts.dataDir,
    operators: admin.operators,
    admin: admin.operators,
    guards: new Guards(limits),
    governance: { ...DEFAULT_GOVERNANCE, ...opts.governance },
    prometheus: opts.prometheus ?? null,
    wake: { bus, hub },
  };

  const app = Fastify({
    loggerInstance: log.child({ part: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
    ...timeoutOptions(limits, opts.tls),
  }) as unknown as FastifyInstance;
  guardEdges(app, limits, opts.tls !== undefined, (what) => metrics.throttled.inc({ what }));
  const routes: RouteDoc[] = [];
  app.addHook('onRoute', (r) => {
    if (r.schema && !r.schema.hide)
      routes.push({ method: r.method, url: r.url, schema: r.schema, permission: r.config?.permission });
  });
  // Authorization is bound to routes, never to the request's URL: every /v1/admin route lives in the admin
  // plugin, whose hook authenticates it; one registered anywhere else stops the server from starting.
  assertAdminScope(app);
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    const { status, body } = errorAnswer(err);
    if (status >= 500) req.log.error({ err }, 'request failed');
    reply.code(status).send(body);
  });

  await devicePlugin(app, ctx);
  // FleetLock (issue 14): its admin routes in the admin scope; the protocol's endpoints outside it (no token).
  const fleetLock: FleetLockOptions = { ...DEFAULT_FLEET_LOCK, ...opts.fleetLock };
  await adminPlugin(app, ctx, [
    vendorTufAdminRoutes,
    adminWebhookRoutes,
    (scope) => adminLockRoutes(scope, ctx, fleetLock),
  ]);
  await fleetLockRoutes(app, ctx, fleetLock);
  await tufPlugin(app, ctx);
  await webPlugin(app);
  // How one gets an operator token: outside the admin scope, no token needed.
  authOidcRoutes(app, ctx, opts.oidc ? new RelyingParty(opts.oidc, clock) : undefined);

  // The ops routes' schemas (operationId, answers) live with the OpenAPI document's (openapi.ts, issue 14).
  app.get('/healthz', { schema: OPS_SCHEMAS.health }, async () => ({
    ok: true,
    version: VERSION,
  }));
  app.get('/metrics', { schema: OPS_SCHEMAS.metrics }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/v1/openapi.json', { schema: OPS_SCHEMAS.openApi }, async () => openApiDocument(routes, VERSION));

  await app.ready();
  driver.start(opts.tickMs ?? 250);
  // Frees reboot slots whose lease ran out, audited (FleetLock).
  const stopLeaseSweep = startLeaseSweep(
    { store, clock, options: fleetLock },
    log.child({ part: 'fleetlock' }),
  );
  // Sends the webhook outbox (rows written by rollout steps and device reports), here and on every replica.
  const webhooks = new WebhookDelivery(store, log.child({ part: 'webhooks' }), clock, opts.webhooks, metrics);
  webhooks.start();
  // Metric gates (issue 14): queries Prometheus for running waves' gates and steps their rollouts.
  const gatesLog = log.child({ part: 'metric-gates' });
  const metricGates = new MetricGateEvaluator(store, driver, gatesLog, clock, opts.prometheus ?? null);
  metricGates.start();
  // Evidence gates (issue 16): compares device signals of baking waves and steps their rollouts.
  const evidenceGates = new EvidenceGateEvaluator(
    store,
    driver,
    log.child({ part: 'evidence-gates' }),
    clock,
  );
  evidenceGates.start();
  return {
    app,
    ctx,
    newAdminToken: admin.generated,
    adminTokenFromEnv: admin.fromInitial,
    async close() {
      await metricGates.stop(); // metric and evidence gates: before the driver, whose steps they ask for
      await evidenceGates.stop();
      await driver.stop();
      await stopLeaseSweep();
      await webhooks.stop(); // before the store closes: attempts in flight record their outcome
      hub.close(); // held waits answer now, so closing does not wait for their holds
      await app.close();
      await bus.close();
      shareRepositoryLock(opts.dataDir, null);
      await store.close();
    },
  };
}
