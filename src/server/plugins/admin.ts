// The admin API as one encapsulated Fastify plugin: its onRequest hook authenticates every route registered
// inside it, whatever spelling of the URL reached the route. Nothing under /v1/admin may be registered elsewhere
// (createServer refuses to start if one is).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.ts';
import { forbidden, rateLimited, unauthorized } from '../errors.ts';
import { adminFleetRoutes } from '../routes/admin-fleet.ts';
import { adminHistoryRoutes } from '../routes/admin-history.ts';
import { adminReleaseRoutes } from '../routes/admin-releases.ts';
import { adminRolloutRoutes } from '../routes/admin-rollouts.ts';
import { bearer } from '../tokens.ts';

/** The decorator that marks the admin scope; see assertAdminScope. */
const ADMIN_SCOPE = 'ringfenceAdminScope';

/**
 * Checks the bearer token in the Authorization header (never a cookie: a cross-site page cannot set that header,
 * so it cannot act). A browser request from another origin is refused outright as well.
 */
async function authenticateAdmin(ctx: ServerContext, req: FastifyRequest): Promise<void> {
  const origin = req.headers.origin;
  if (origin !== undefined && hostOf(origin) !== req.headers.host)
    throw forbidden('cross-origin admin requests are refused');
  if (await ctx.admin.matches(bearer(req.headers.authorization))) return;
  if (!ctx.guards.failedAuth.take(req.ip)) {
    ctx.metrics.throttled.inc({ what: 'auth' });
    throw rateLimited('too many failed authentications from this address');
  }
  throw unauthorized('admin token required');
}

function hostOf(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}

/** Registers the admin routes (and `extra`, routes that live with their area) inside the authenticated scope. */
export async function adminPlugin(
  app: FastifyInstance,
  ctx: ServerContext,
  extra: Array<(scope: FastifyInstance, ctx: ServerContext) => void> = [],
): Promise<void> {
  await app.register(async (scope) => {
    scope.decorate(ADMIN_SCOPE, true);
    scope.addHook('onRequest', async (req) => authenticateAdmin(ctx, req));
    adminFleetRoutes(scope, ctx);
    adminReleaseRoutes(scope, ctx);
    adminRolloutRoutes(scope, ctx);
    adminHistoryRoutes(scope, ctx);
    for (const add of extra) add(scope, ctx);

    scope.post(
      '/v1/admin/token/rotate',
      {
        schema: {
          summary: 'Replace the admin token; the new one is returned once and the old one is refused',
          tags: ['admin'],
        },
      },
      async () => ({ token: await ctx.admin.rotate('admin') }),
    );
  });
}

/** Refuses to start a server with an admin route outside the admin scope (it would have no authentication). */
export function assertAdminScope(app: FastifyInstance): void {
  app.addHook('onRoute', function (this: FastifyInstance, route) {
    if (/^\/v1\/admin(\/|$)/.test(route.url) && !this.hasDecorator(ADMIN_SCOPE))
      throw new Error(`admin route ${route.method} ${route.url} registered outside the admin plugin`);
  });
}
