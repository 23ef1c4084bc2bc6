// Single sign-on (OpenID Connect): how one GETS an operator token, so these routes live outside the admin scope
// and need none. The dashboard's code flow (/login → IdP → /callback → the dashboard with the token in the URL
// fragment) and the CLI's exchange of a device-flow ID token. The IdP side is ../oidc/relying-party.ts, claims
// to operator ../oidc/claims.ts, the operator and its token ../services/operators.ts (loginFromIdp).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { OidcOptions } from '../config.ts';
import type { ServerContext } from '../context.ts';
import { errorAnswer, HttpError, notFound, rateLimited } from '../errors.ts';
import { mapClaims } from '../oidc/claims.ts';
import { IdTokenRefused } from '../oidc/id-token.ts';
import type { RelyingParty, SignedIn } from '../oidc/relying-party.ts';
import { noBody } from './schemas/answers.ts';

/** Where the dashboard is served; it reads `#token=…` / `#sso_error=…` on load (src/web/api.ts). */
export const DASHBOARD_PATH = '/';

const info = {
  type: 'object',
  required: ['enabled'],
  properties: {
    enabled: { type: 'boolean' },
    issuer: { type: 'string' },
    client_id: { type: 'string' },
    /** The scopes to ask for, so the ID token carries the name and role claims. */
    scope: { type: 'string' },
    device_flow: { type: 'boolean' },
    dashboard: { type: 'boolean' },
  },
} as const;
const exchangeBody = {
  type: 'object',
  required: ['id_token'],
  additionalProperties: false,
  // A JWT is three base64url parts; 16 kB is far beyond any real ID token.
  properties: { id_token: { type: 'string', minLength: 1, maxLength: 16_384 } },
} as const;
const exchanged = {
  type: 'object',
  required: ['name', 'role', 'token', 'expires_at'],
  properties: {
    name: { type: 'string' },
    role: { type: 'string' },
    token: { type: 'string' },
    expires_at: { type: 'integer' },
  },
} as const;
const callbackQuery = {
  type: 'object',
  properties: {
    code: { type: 'string', maxLength: 4096 },
    state: { type: 'string', maxLength: 512 },
    iss: { type: 'string', maxLength: 2048 },
    error: { type: 'string', maxLength: 256 },
    error_description: { type: 'string', maxLength: 2048 },
  },
} as const;

const off = () => notFound('single sign-on is not configured (server.yaml oidc:)');

/** Sends the browser back to the dashboard with `#key=value` (a fragment never reaches a server or a log). */
function toDashboard(reply: FastifyReply, key: 'token' | 'sso_error', value: string): FastifyReply {
  // No caching, no referrer: the Location header holds a token.
  return reply
    .header('cache-control', 'no-store')
    .header('referrer-policy', 'no-referrer')
    .redirect(`${DASHBOARD_PATH}#${key}=${encodeURIComponent(value)}`, 302);
}

/** Registers /v1/auth/oidc* (answering "not configured" when `rp` is undefined). */
export function authOidcRoutes(app: FastifyInstance, ctx: ServerContext, rp: RelyingParty | undefined): void {
  /** Maps verified claims to an operator and issues its session token (403 with the reason otherwise). */
  const login = async (o: OidcOptions, signedIn: SignedIn) => {
    const mapped = mapClaims(signedIn.claims, o);
    if (!mapped.ok) throw new HttpError(403, mapped.message);
    return ctx.operators.loginFromIdp({
      name: mapped.name,
      role: mapped.role,
      issuer: signedIn.issuer,
      subject: signedIn.subject,
      sessionHours: o.sessionHours,
    });
  };

  app.get(
    '/v1/auth/oidc',
    {
      schema: {
        operationId: 'getOidcInfo',
        summary:
          'Whether single sign-on is on, with which issuer and client, and for the dashboard and/or CLI',
        tags: ['auth'],
        response: { 200: info },
      },
    },
    async () => {
      if (!rp) return { enabled: false };
      const { config } = await rp.discover();
      return {
        enabled: true,
        issuer: rp.opts.issuer,
        client_id: rp.opts.clientId,
        scope: rp.scope(config),
        device_flow: await rp.deviceFlow(),
        dashboard: rp.dashboard,
      };
    },
  );

  app.get(
    '/v1/auth/oidc/login',
    {
      schema: {
        operationId: 'oidcLogin',
        summary: 'Dashboard sign-in: redirects to the OpenID provider (code flow, PKCE S256, state, nonce)',
        tags: ['auth'],
        response: {
          302: noBody("To the OpenID provider; back to the dashboard with #sso_error=… when it can't start"),
        },
      },
    },
    async (_req, reply) => {
      try {
        if (!rp) throw off();
        const url = await rp.begin();
        return reply.header('cache-control', 'no-store').redirect(url.href, 302);
      } catch (e) {
        return toDashboard(reply, 'sso_error', errorAnswer(e as Error).body.message);
      }
    },
  );

  app.get(
    '/v1/auth/oidc/callback',
    {
      schema: {
        operationId: 'oidcCallback',
        summary: "The OpenID provider's redirect: signs the operator in and returns to the dashboard",
        tags: ['auth'],
        querystring: callbackQuery,
        response: {
          302: noBody('To the dashboard with #token=… or #sso_error=… (a fragment never reaches a log)'),
        },
      },
    },
    async (req: FastifyRequest, reply) => {
      try {
        if (!rp) throw off();
        const query = new URLSearchParams(req.url.slice(req.url.indexOf('?') + 1 || req.url.length));
        const out = await login(rp.opts, await rp.finish(query));
        return toDashboard(reply, 'token', out.token);
      } catch (e) {
        const { status, body } = errorAnswer(e as Error);
        req.log.warn({ status, reason: body.message }, 'single sign-on refused');
        return toDashboard(reply, 'sso_error', body.message);
      }
    },
  );

  app.post(
    '/v1/auth/oidc/exchange',
    {
      schema: {
        operationId: 'oidcExchange',
        summary: "The CLI's device flow: trades the OpenID provider's ID token for an operator token",
        tags: ['auth'],
        body: exchangeBody,
        response: { 200: exchanged },
      },
    },
    async (req: FastifyRequest<{ Body: { id_token: string } }>) => {
      if (!rp) throw off();
      // Like a failed admin authentication: refusals cost the address a token of the failed-auth limiter.
      const refused = (e: HttpError) => {
        if (!ctx.guards.failedAuth.take(req.ip)) {
          ctx.metrics.throttled.inc({ what: 'auth' });
          return rateLimited('too many failed authentications from this address');
        }
        return e;
      };
      if (ctx.guards.failedAuth.exhausted(req.ip)) throw refused(new HttpError(401, 'refused'));
      try {
        return await login(rp.opts, await rp.verifyPresented(req.body.id_token));
      } catch (e) {
        if (e instanceof IdTokenRefused) throw refused(new HttpError(401, e.message));
        if (e instanceof HttpError && (e.statusCode === 401 || e.statusCode === 403)) throw refused(e);
        throw e;
      }
    },
  );
}
