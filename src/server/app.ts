// Builds the Fastify server: routes, admin auth, uniform errors, OpenAPI and metrics.
import { join } from 'node:path';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { BlobStore } from '../store/blobs.ts';
import { openStore, type Store } from '../store/database.ts';
import { VERSION } from '../version.ts';
import { HttpError, type ServerContext } from './context.ts';
import { createMetrics } from './metrics.ts';
import { openApiDocument, type RouteDoc } from './openapi.ts';
import { RolloutDriver } from './rollout-driver.ts';
import { adminFleetRoutes } from './routes/admin-fleet.ts';
import { adminReleaseRoutes } from './routes/admin-releases.ts';
import { adminRolloutRoutes } from './routes/admin-rollouts.ts';
import { deviceRoutes } from './routes/device.ts';
import { tufRoutes } from './routes/tuf.ts';
import { webRoutes } from './routes/web.ts';
import { bearer, hashToken, newToken, tokenMatches } from './tokens.ts';

export { VERSION };

export interface ServerOptions {
  dataDir: string;
  databaseUrl?: string;
  logger?: Logger;
  clock?: () => number;
  pollSeconds?: number;
  tickMs?: number;
  /** Used as the admin token on first start instead of a random one (automation, tests). */
  initialAdminToken?: string;
}

export interface RunningServer {
  app: FastifyInstance;
  ctx: ServerContext;
  /** Set only on the first start: the admin token, to be shown once. */
  newAdminToken: string | null;
  close(): Promise<void>;
}

/** Creates the admin token on first start and stores only its hash. */
async function bootstrapAdmin(store: Store, initial?: string): Promise<string | null> {
  const row = await store.db
    .selectFrom('meta')
    .select('value')
    .where('key', '=', 'admin_token_hash')
    .executeTakeFirst();
  if (row) return null;
  const token = initial ?? newToken('adm');
  await store.db
    .insertInto('meta')
    .values({ key: 'admin_token_hash', value: hashToken(token) })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  return token;
}

/** Opens the store and builds a ready (not yet listening) server. */
export async function createServer(opts: ServerOptions): Promise<RunningServer> {
  const log = opts.logger ?? pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'info' });
  const store = await openStore({ dataDir: opts.dataDir, url: opts.databaseUrl });
  const newAdminToken = await bootstrapAdmin(store, opts.initialAdminToken);
  const adminHash = (
    await store.db
      .selectFrom('meta')
      .select('value')
      .where('key', '=', 'admin_token_hash')
      .executeTakeFirstOrThrow()
  ).value;
  const clock = opts.clock ?? Date.now;
  const metrics = createMetrics();
  const driver = new RolloutDriver(store, log, clock);
  driver.onStep(() => metrics.rolloutSteps.inc());
  const ctx: ServerContext = {
    store,
    blobs: new BlobStore(join(opts.dataDir, 'blobs')),
    driver,
    metrics,
    log,
    clock,
    pollSeconds: opts.pollSeconds ?? 30,
    dataDir: opts.dataDir,
  };

  const app: FastifyInstance = Fastify({
    loggerInstance: log.child({ part: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
  });
  const routes: RouteDoc[] = [];
  app.addHook('onRoute', (r) => {
    if (r.schema && !(r.schema as { hide?: boolean }).hide)
      routes.push({ method: r.method, url: r.url, schema: r.schema as Record<string, unknown> });
  });
  app.addHook('onRequest', async (req) => {
    if (!req.url.startsWith('/v1/admin/')) return;
    const token = bearer(req.headers.authorization);
    if (!token || !tokenMatches(token, adminHash)) throw new HttpError(401, 'admin token required');
  });
  app.setErrorHandler(
    (err: Error & { statusCode?: number; validation?: unknown; code?: string }, req, reply) => {
      const status = err instanceof HttpError ? err.statusCode : (err.statusCode ?? 500);
      if (status >= 500) req.log.error({ err }, 'request failed');
      const message =
        status >= 500 && !(err instanceof HttpError) ? 'internal error (see server log)' : err.message;
      reply
        .code(status)
        .send({ error: err.code ?? (status === 401 ? 'unauthorized' : 'bad_request'), message });
    },
  );

  deviceRoutes(app, ctx);
  adminReleaseRoutes(app, ctx);
  adminRolloutRoutes(app, ctx);
  adminFleetRoutes(app, ctx);
  tufRoutes(app, ctx);
  webRoutes(app);

  app.get('/healthz', { schema: { summary: 'Liveness and version', tags: ['ops'] } }, async () => ({
    ok: true,
    version: VERSION,
  }));
  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['ops'] } }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/v1/openapi.json', { schema: { summary: 'This API as OpenAPI 3.1', tags: ['ops'] } }, async () =>
    openApiDocument(routes, VERSION),
  );

  await app.ready();
  driver.start(opts.tickMs ?? 250);
  return {
    app,
    ctx,
    newAdminToken,
    async close() {
      await driver.stop();
      await app.close();
      await store.close();
    },
  };
}
