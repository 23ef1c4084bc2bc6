// The admin API as one encapsulated Fastify plugin: its onRequest hook authenticates every route registered
// inside it, whatever spelling of the URL reached the route, names the operator (`req.operator`) and checks the
// permission the route declares (`config.permission`, roles.ts). Nothing under /v1/admin may be registered
// elsewhere, and no admin route may lack a permission (createServer refuses to start otherwise).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.ts';
import { forbidden, rateLimited, unauthorized } from '../errors.ts';
import { callerOf } from '../operator-request.ts';
import { type Permission, refusal } from '../roles.ts';
import { adminFleetRoutes } from '../routes/admin-fleet.ts';
import { adminHistoryRoutes } from '../routes/admin-history.ts';
import { adminOperatorRoutes } from '../routes/admin-operators.ts';
import { adminReleaseRoutes } from '../routes/admin-releases.ts';
import { adminRolloutRoutes } from '../routes/admin-rollouts.ts';
import { bearer } from '../tokens.ts';

/** The decorator that marks the admin scope; see assertAdminScope. */
const ADMIN_SCOPE = 'ringfenceAdminScope';
const PERMISSIONS: readonly Permission[] = ['read', 'operate', 'approve', 'admin'];

/**
 * Checks the bearer token in the Authorization header (never a cookie: a cross-site page cannot set that header,
 * so it cannot act) and sets `req.operator`. A browser request from another origin is refused outright as well.
 * Then the role must hold the route's permission (403 with a one-line reason; nothing has run yet).
 */
async function authenticateAdmin(ctx: ServerContext, req: FastifyRequest): Promise<void> {
  const origin = req.headers.origin;
  if (origin !== undefined && hostOf(origin) !== req.headers.host)
    throw forbidden('cross-origin admin requests are refused');
  const auth = await ctx.operators.authenticate(bearer(req.headers.authorization));
  if (!auth.ok) {
    if (!ctx.guards.failedAuth.take(req.ip)) {
      ctx.metrics.throttled.inc({ what: 'auth' });
      throw rateLimited('too many failed authentications from this address');
    }
    throw unauthorized(auth.reason);
  }
  req.operator = auth.operator;
  const needs = req.routeOptions.config.permission;
  // Fail closed: the start-up check makes a route without a permission impossible, but never let one through.
  if (needs === undefined) throw forbidden(`${req.method} ${req.routeOptions.url} declares no permission`);
  const why = refusal(auth.operator.role, needs, `${req.method} ${req.routeOptions.url}`);
  if (why) throw forbidden(why);
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
    scope.addHook('onRoute', (route) => {
      const p = (route.config as { permission?: unknown } | undefined)?.permission;
      if (!PERMISSIONS.includes(p as Permission))
        throw new Error(
          `admin route ${route.method} ${route.url} declares no permission (route option config.permission: ${PERMISSIONS.join(' | ')})`,
        );
    });
    scope.addHook('onRequest', async (req) => authenticateAdmin(ctx, req));
    adminFleetRoutes(scope, ctx);
    adminReleaseRoutes(scope, ctx);
    adminRolloutRoutes(scope, ctx);
    adminHistoryRoutes(scope, ctx);
    adminOperatorRoutes(scope, ctx);
    for (const add of extra) add(scope, ctx);

    scope.post(
      '/v1/admin/token/rotate',
      {
        // Anyone may replace the token they are using; someone else's is POST /v1/admin/operators/:name/rotate.
        config: { permission: 'read' },
        schema: {
          operationId: 'rotateOwnToken',
          summary:
            'Replace the token this request used; the new one is returned once and the old one is refused',
          tags: ['admin'],
          response: {
            200: { type: 'object', required: ['token'], properties: { token: { type: 'string' } } },
          },
        },
      },
      async (req) => ctx.operators.rotateOwn(callerOf(req)),
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
