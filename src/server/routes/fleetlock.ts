// The FleetLock protocol (Zincati's reboot manager, coreos/zincati docs/development/fleetlock/protocol.md):
// POST /fleetlock/v1/pre-reboot and /fleetlock/v1/steady-state with header `fleet-lock-protocol: true` and body
// {"client_params": {"id", "group"}}; 200 on success, else a non-200 with {"kind", "value"}. FleetLock clients
// send no credentials, so these routes live outside the admin scope, behind what server.yaml `fleet_lock:`
// allows (an address allow-list, a shared secret header) and rate limits of their own: every request per address
// and per node id, refusals per address (separate from the failed-authentication budget of device and admin
// logins, so FleetLock clients cannot lock those out).
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.ts';
import { RateLimiter } from '../limits.ts';
import { type FleetLockOptions, type LockDeps, preReboot, steadyState } from '../services/fleet-lock.ts';
import { addressList, DEFAULT_FLEET_LOCK_RATES } from '../services/fleet-lock-rules.ts';
import { noBody } from './schemas/answers.ts';

/** The protocol's error body: `kind` a fixed machine-readable code, `value` a human-readable reason. */
const protocolError = {
  type: 'object',
  required: ['kind', 'value'],
  properties: { kind: { type: 'string' }, value: { type: 'string' } },
} as const;

/** A protocol error: the status and the `{kind, value}` body; kinds are few and fixed (clients count them). */
class FleetLockError extends Error {
  constructor(
    readonly status: number,
    readonly kind: string,
    message: string,
    /** Seconds, sent as Retry-After (429 only). */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** Group names as the protocol defines them; ids as Zincati (hex UUID) and other clients (node names) send them. */
const GROUP = /^[a-zA-Z0-9.-]{1,256}$/;
const ID = /^[a-zA-Z0-9._:@-]{1,256}$/;
/** The largest body read: two fields of at most 256 characters, pretty-printed as Zincati sends them. */
const BODY_LIMIT = 4096;

/** The client's address as the allow-list compares it (an IPv4 client of a dual-stack socket as IPv4). */
function clientAddress(ip: string): { addr: string; family: 'ipv4' | 'ipv6' } {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4) return { addr: v4[1], family: 'ipv4' };
  return { addr: ip, family: isIP(ip) === 6 ? 'ipv6' : 'ipv4' };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The body's node id and group, or a protocol error saying what is wrong with it. */
function clientParams(body: unknown): { id: string; group: string } {
  const bad = (why: string) => new FleetLockError(400, 'invalid_client_identity', why);
  if (typeof body !== 'string' || body.trim() === '')
    throw bad('empty body: expected {"client_params": {…}}');
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    throw bad('body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('body is not a JSON object');
  const extra = Object.keys(doc).filter((k) => k !== 'client_params');
  if (extra.length > 0) throw bad(`unknown field "${extra[0]}"`);
  const p = (doc as { client_params?: unknown }).client_params;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw bad('client_params must be an object');
  const extraP = Object.keys(p).filter((k) => k !== 'id' && k !== 'group');
  if (extraP.length > 0) throw bad(`unknown field "client_params.${extraP[0]}"`);
  const { id, group } = p as { id?: unknown; group?: unknown };
  if (typeof id !== 'string' || !ID.test(id))
    throw bad('client_params.id must be 1 to 256 letters, digits, ".", "_", ":", "@" or "-"');
  if (typeof group !== 'string' || !GROUP.test(group))
    throw bad('client_params.group must be 1 to 256 letters, digits, "." or "-"');
  return { id, group };
}

/**
 * Registers the FleetLock endpoints in a scope of their own: any content type is read as JSON text (Zincati
 * sends none, `curl -d` sends a form type), and every error is answered in the protocol's shape.
 */
export async function fleetLockRoutes(
  app: FastifyInstance,
  ctx: ServerContext,
  options: FleetLockOptions,
): Promise<void> {
  const deps: LockDeps = { store: ctx.store, clock: ctx.clock, options };
  const allowed = options.allowFrom.length > 0 ? addressList(options.allowFrom) : null;
  const secret = options.secretHeader
    ? { name: options.secretHeader.name.toLowerCase(), digest: digest(options.secretHeader.value) }
    : null;
  if (options.enabled && !allowed && !secret)
    ctx.log.warn(
      'FleetLock is enabled for any address without a secret header: anyone who reaches this server can take and ' +
        'give back reboot slots (server.yaml fleet_lock.allow_from / secret_header; docs/fleetlock.md)',
    );
  const rates = { ...DEFAULT_FLEET_LOCK_RATES, ...options.rateLimit };
  // Each rate is also its burst. The injected clock, so tests can refill a bucket by moving time.
  const bucket = (perMinute: number) => new RateLimiter(perMinute, perMinute, ctx.clock);
  const perAddress = bucket(rates.perAddressPerMinute);
  const perId = bucket(rates.perIdPerMinute);
  const failures = bucket(rates.failuresPerAddressPerMinute);

  const limited = (limiter: RateLimiter, key: string, why: string): FleetLockError => {
    ctx.metrics.throttled.inc({ what: 'fleetlock' });
    return new FleetLockError(429, 'rate_limited', why, Math.max(1, limiter.retryAfter(key)));
  };
  /** A refusal that counts against the address's FleetLock failures (429 once they are spent). */
  const failed = (req: FastifyRequest, e: FleetLockError): FleetLockError =>
    failures.take(req.ip) ? e : limited(failures, req.ip, 'too many refused requests from this address');

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) =>
      done(null, body),
    );
    scope.setErrorHandler((err: Error & { statusCode?: number }, req, reply: FastifyReply) => {
      let e: FleetLockError;
      if (err instanceof FleetLockError) e = err;
      else if (err.statusCode === 413)
        e = failed(
          req,
          new FleetLockError(413, 'invalid_client_identity', `body larger than ${BODY_LIMIT} bytes`),
        );
      else if (err.statusCode !== undefined && err.statusCode < 500)
        e = failed(req, new FleetLockError(err.statusCode, 'invalid_client_identity', err.message));
      else {
        req.log.error({ err }, 'fleetlock request failed');
        e = new FleetLockError(500, 'failed_lock', 'internal error (see server log)');
      }
      if (e.retryAfter !== undefined) reply.header('retry-after', String(e.retryAfter));
      reply.code(e.status).send({ kind: e.kind, value: e.message });
    });

    // Before the body is read: is FleetLock on, is this address within its rates, may it use FleetLock, does it
    // know the secret? Every request spends from its address's budget, answered or refused.
    scope.addHook('onRequest', async (req) => {
      if (!options.enabled)
        throw new FleetLockError(
          404,
          'fleetlock_disabled',
          'FleetLock is off on this server (server.yaml fleet_lock.enabled)',
        );
      if (failures.exhausted(req.ip))
        throw limited(failures, req.ip, 'too many refused requests from this address');
      if (!perAddress.take(req.ip)) throw limited(perAddress, req.ip, 'too many requests from this address');
      if (allowed) {
        const { addr, family } = clientAddress(req.ip);
        if (!allowed.check(addr, family))
          throw failed(
            req,
            new FleetLockError(403, 'forbidden_address', `address ${addr} may not use FleetLock`),
          );
      }
      if (secret) {
        const given = req.headers[secret.name];
        if (typeof given !== 'string' || !timingSafeEqual(digest(given), secret.digest))
          throw failed(
            req,
            new FleetLockError(401, 'unauthorized', `header ${secret.name} missing or wrong`),
          );
      }
      // The protocol's guard against a request that reached us by an unintended redirect.
      if (req.headers['fleet-lock-protocol'] !== 'true')
        throw failed(
          req,
          new FleetLockError(400, 'invalid_protocol_header', 'header fleet-lock-protocol: true required'),
        );
    });

    /**
     * The request's client_params, or the protocol error for a malformed body (counted against the address). A
     * node id spends from its own budget too, so one looping node cannot use up the whole address's.
     */
    const paramsOf = (req: FastifyRequest): { id: string; group: string } => {
      let p: { id: string; group: string };
      try {
        p = clientParams(req.body);
      } catch (e) {
        throw failed(req, e as FleetLockError);
      }
      if (!perId.take(p.id)) throw limited(perId, p.id, `too many requests for node id "${p.id}"`);
      return p;
    };
    // Counted as a failure: probing for group names is refused like a wrong secret.
    const unknownGroup = (req: FastifyRequest, group: string) =>
      failed(
        req,
        new FleetLockError(400, 'unknown_group', `unknown group "${group}" (ringfence lock set ${group} …)`),
      );
    const schema = (operationId: string, summary: string) => ({
      operationId,
      summary,
      description:
        'FleetLock protocol (Zincati): header fleet-lock-protocol: true, body {"client_params": {"id", "group"}}; ' +
        '200 on success, else {"kind", "value"}. No token: restricted by server.yaml fleet_lock.',
      tags: ['fleetlock'],
      // 200 has no body; refusals are the protocol's {kind, value}, never the API's {error, message}.
      response: { 200: noBody('Done; no body'), '4xx': protocolError, '5xx': protocolError },
    });

    scope.post(
      '/fleetlock/v1/pre-reboot',
      { schema: schema('fleetLockPreReboot', 'Take a reboot slot (idempotent for a holder)') },
      async (req, reply) => {
        const p = paramsOf(req);
        const out = await preReboot(deps, p.group, p.id, req.ip);
        if (out === 'unknown-group') throw unknownGroup(req, p.group);
        if (out === 'full')
          throw new FleetLockError(
            409,
            'failed_lock_semaphore_full',
            `all slots of group "${p.group}" are taken`,
          );
        reply.code(200).send();
      },
    );

    scope.post(
      '/fleetlock/v1/steady-state',
      { schema: schema('fleetLockSteadyState', 'Give back a reboot slot if held') },
      async (req, reply) => {
        const p = paramsOf(req);
        const out = await steadyState(deps, p.group, p.id, req.ip);
        if (out === 'unknown-group') throw unknownGroup(req, p.group);
        reply.code(200).send();
      },
    );
  });
}
