// The device protocol as one Fastify plugin: enrollment, check-in (state up, desired releases down) and blob
// download with Range. Bodies are validated by the TypeBox schemas of src/protocol/device.ts, which also type
// the handlers (the type provider): a route validates, calls a service and shapes the answer.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import {
  CheckinAnswer,
  CheckinRequest,
  EnrollAnswer,
  EnrollRequest,
  WaitAnswer,
  WaitRequest,
} from '../../protocol/device.ts';
import { TufRepository } from '../../trust/signer/tuf-repository.ts';
import { CheckinBatcher, type CheckinResult } from '../checkin.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { liveDeviceIdByTokenHash } from '../db/devices.ts';
import { releaseUsesBlob } from '../db/releases.ts';
import { errorAnswer } from '../errors.ts';
import { wakeHoldS } from '../limits.ts';
import { ErrorBody, noBody, rawBody } from '../routes/schemas/answers.ts';
import { ReleaseArtifacts } from '../services/checkin.ts';
import { currentDesiredTag, desiredTag, deviceByTokenHash } from '../services/desired-tag.ts';
import { reportApplier } from '../services/device-reports.ts';
import { enrollDevice } from '../services/enrollment.ts';
import { SignalDemand } from '../services/signal-demand.ts';
import { bearer, hashToken } from '../tokens.ts';

const WAIT_PATH = '/v1/wait';
const blobBytes = { type: 'string', contentMediaType: 'application/octet-stream' } as const;

/**
 * The organisation's current root (root.json, the newest version) for a device to pin, or undefined without
 * keys. The newest, not 1.root.json: keys revoked by a rotation must not be trusted by new devices.
 */
function currentRoot(ctx: ServerContext): Record<string, unknown> | undefined {
  const bytes = TufRepository.open(ctx.dataDir)?.file('root.json');
  return bytes ? JSON.parse(bytes.toString('utf8')) : undefined;
}

/** Blobs that belong to an approved release (approval is final, so hits are cached for the process's life). */
class ApprovedBlobs {
  private readonly known = new Set<string>();
  constructor(private readonly ctx: ServerContext) {}

  /** True when an approved release lists the blob. */
  async has(sha256: string): Promise<boolean> {
    if (this.known.has(sha256)) return true;
    const hit = await releaseUsesBlob(this.ctx.store.db, sha256, true);
    if (hit) this.known.add(sha256);
    return hit;
  }
}

/** A 401 counts against the address; past its budget the answer becomes 429. Other errors pass through. */
function failedAuth(ctx: ServerContext, ip: string, e: unknown): unknown {
  if (!(e instanceof HttpError) || e.statusCode !== 401) return e;
  if (ctx.guards.failedAuth.take(ip)) return e;
  ctx.metrics.throttled.inc({ what: 'auth' });
  return new HttpError(429, 'too many failed authentications from this address');
}

/** The device token's hash, computed once per check-in by the gate and read by the handler. */
const gateHashes = new WeakMap<FastifyRequest, string>();

/** Check-in limits, before the body is read or parsed: a refused check-in costs next to nothing. */
async function checkinGate(ctx: ServerContext, req: FastifyRequest): Promise<void> {
  const token = bearer(req.headers.authorization);
  const hash = token ? hashToken(token) : null;
  if (!hash) throw failedAuth(ctx, req.ip, new HttpError(401, 'device token required'));
  gateHashes.set(req, hash);
  // An address that keeps presenting bad tokens gets 429 without the batch; a valid token always passes
  // (one indexed lookup unless it checked in recently), so honest devices behind that address keep working.
  if (ctx.guards.failedAuth.exhausted(req.ip) && !ctx.guards.knownDevices.has(hash)) {
    if (!(await liveDeviceIdByTokenHash(ctx.store.db, hash)))
      throw failedAuth(ctx, req.ip, new HttpError(401, 'unknown device token'));
    ctx.guards.rememberDevice(hash);
  }
  if (!ctx.guards.checkins.take(hash)) {
    ctx.metrics.throttled.inc({ what: 'checkin' });
    throw new HttpError(429, 'check-ins too frequent for this device; keep to the poll interval');
  }
}

/** Sends a blob, or the single byte range asked for. */
function sendBlob(ctx: ServerContext, sha256: string, range: string | undefined, reply: FastifyReply) {
  const size = ctx.blobs.size(sha256);
  reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream');
  reply.header('cache-control', 'public, max-age=31536000, immutable').header('etag', `"${sha256}"`);
  const m = /^bytes=(\d*)-(\d*)$/.exec(range ?? '');
  if (range && m) {
    let start = m[1] === '' ? size - Number(m[2]) : Number(m[1]);
    let end = m[1] === '' || m[2] === '' ? size - 1 : Number(m[2]);
    start = Math.max(0, start);
    end = Math.min(end, size - 1);
    if (start > end || start >= size) {
      reply.code(416).header('content-range', `bytes */${size}`);
      return reply.send();
    }
    reply
      .code(206)
      .header('content-range', `bytes ${start}-${end}/${size}`)
      .header('content-length', end - start + 1);
    return reply.send(ctx.blobs.read(sha256, { start, end }));
  }
  reply.header('content-length', size);
  return reply.send(ctx.blobs.read(sha256));
}

/** Wait limits, before the body is read: a device token, and the device's own rate of waits. */
async function waitGate(ctx: ServerContext, req: FastifyRequest, reply: FastifyReply): Promise<void> {
  const token = bearer(req.headers.authorization);
  const hash = token ? hashToken(token) : null;
  if (!hash) throw failedAuth(ctx, req.ip, new HttpError(401, 'device token required'));
  gateHashes.set(req, hash);
  if (!ctx.guards.waits.take(hash)) {
    ctx.metrics.throttled.inc({ what: 'wait' });
    reply.header('retry-after', String(Math.max(1, ctx.guards.waits.retryAfter(hash))));
    throw new HttpError(429, 'waits too frequent for this device');
  }
}

/**
 * POST /v1/wait: the wait is registered with the hub FIRST, then the device's current desired answer is
 * compared with its tag, so a change committed between its check-in and this wait is never lost.
 */
function registerWaitRoute(base: FastifyInstance, ctx: ServerContext, maxSeconds: number): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const artifacts = new ReleaseArtifacts();
  app.post(
    WAIT_PATH,
    {
      schema: {
        operationId: 'waitForChange',
        summary: 'Wake-up: held until this device has something new (then changed: true) or the hold ends',
        tags: ['device'],
        body: WaitRequest,
        response: { 200: WaitAnswer, 503: Type.Unsafe<{ error: string; message: string }>(ErrorBody) },
      },
      bodyLimit: 1024,
      onRequest: async (req, reply) => waitGate(ctx, req, reply),
    },
    async (req, reply) => {
      const hash = gateHashes.get(req);
      if (hash === undefined) throw new HttpError(401, 'device token required');
      const dev = await deviceByTokenHash(ctx.store.db, hash);
      if (!dev) throw failedAuth(ctx, req.ip, new HttpError(401, 'unknown device token'));
      const held = ctx.wake.hub.hold(dev.id, Math.min(req.body.seconds, maxSeconds) * 1000);
      if (!held) {
        // Answered here rather than thrown: a full server is expected under load, not an error to log each time.
        ctx.metrics.throttled.inc({ what: 'wait' });
        const { status, body } = errorAnswer(
          new HttpError(503, 'this server holds as many waits as it may; check in at the poll interval'),
        );
        return reply
          .code(status as 503)
          .header('retry-after', String(maxSeconds))
          .send(body);
      }
      // A client that goes away frees its place at once (also one gone before the wait was registered).
      reply.raw.once('close', () => held.finish(false));
      if (req.raw.socket?.destroyed) held.finish(false);
      try {
        if ((await currentDesiredTag(ctx.store.db, dev, artifacts)) !== req.body.tag) held.finish(true);
      } catch (e) {
        held.finish(false);
        throw e;
      }
      const changed = await held.done;
      if (changed) ctx.metrics.wakeups.inc();
      return { changed };
    },
  );
}

/** Registers the device routes on `app` (no scope of their own: devices authenticate per route). */
export function registerDeviceRoutes(base: FastifyInstance, ctx: ServerContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const batcher = new CheckinBatcher(ctx, reportApplier(ctx));
  const signalDemand = new SignalDemand(ctx.store, ctx.clock);
  app.addHook('onClose', async () => batcher.close()); // writes the last-seen times it still holds
  const approvedBlobs = new ApprovedBlobs(ctx);
  const limits = ctx.guards.limits;
  const wake = limits.wakeEnabled ? { path: WAIT_PATH, max_seconds: wakeHoldS(limits) } : undefined;
  if (wake) registerWaitRoute(app, ctx, wake.max_seconds);

  app.post(
    '/v1/enroll',
    {
      schema: {
        operationId: 'enrollDevice',
        summary: 'Enroll a device with an enrollment token; returns its own device token (shown once)',
        tags: ['device'],
        body: EnrollRequest,
        response: { 200: EnrollAnswer },
      },
    },
    async (req) => {
      if (!ctx.guards.enrollments.take(req.ip)) {
        ctx.metrics.throttled.inc({ what: 'enroll' });
        throw new HttpError(429, 'too many enrollments from this address; try again later');
      }
      try {
        const enrolled = await enrollDevice(ctx, req.body);
        return { ...enrolled, poll_seconds: ctx.pollSeconds, tuf_root: currentRoot(ctx) };
      } catch (e) {
        throw failedAuth(ctx, req.ip, e);
      }
    },
  );

  app.post(
    '/v1/checkin',
    {
      schema: {
        operationId: 'checkIn',
        summary: 'Device check-in: report component states and transaction results; receive desired releases',
        tags: ['device'],
        body: CheckinRequest,
        response: { 200: CheckinAnswer },
      },
      onRequest: async (req) => checkinGate(ctx, req),
    },
    async (req) => {
      const end = ctx.metrics.checkinSeconds.startTimer();
      const body = req.body;
      const hash = gateHashes.get(req);
      if (hash === undefined) throw new HttpError(401, 'device token required'); // the gate always sets it
      // Concurrent check-ins share one transaction (group commit); see ../services/checkin.ts.
      let result: CheckinResult;
      try {
        result = await batcher.submit(hash, body);
      } catch (e) {
        throw failedAuth(ctx, req.ip, e);
      }
      ctx.guards.rememberDevice(hash);
      ctx.metrics.checkins.inc();
      for (const r of body.reports ?? []) ctx.metrics.reports.inc({ outcome: r.outcome });
      // The batch committed: rollouts its reports touched step now, not at the next tick (see the driver).
      if (body.reports?.length) ctx.driver.nudge();
      end();
      // A device with no pinned root (enrolled before `keys init`) gets the root to pin (trust on first use).
      const unverified = body.components.some((c) => c.health?.trust === 'unverified');
      const root = unverified ? currentRoot(ctx) : undefined;
      const compared = await signalDemand.components();
      return {
        poll_seconds: ctx.pollSeconds,
        desired: result.desired,
        acked: (body.reports ?? []).map((r) => r.txn_id),
        ...(root ? { tuf_root: root } : {}),
        desired_tag: desiredTag(result.desired),
        ...(wake ? { wake } : {}),
        signals_wanted: body.components.map((c) => c.name).filter((n) => compared.has(n)),
      };
    },
  );

  app.get(
    '/v1/blobs/:sha256',
    {
      schema: {
        operationId: 'downloadBlob',
        summary: 'Download a content-addressed blob (device or admin token); supports a single HTTP Range',
        tags: ['device'],
        params: Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
        response: {
          200: rawBody('The blob', 'application/octet-stream', blobBytes),
          206: rawBody('The byte range asked for (content-range)', 'application/octet-stream', blobBytes),
          416: noBody('Range not satisfiable (content-range: bytes */size); no body'),
        },
      },
    },
    async (req, reply) => {
      const token = bearer(req.headers.authorization);
      const { sha256 } = req.params;
      if (!(await ctx.admin.matches(token))) {
        const dev = token ? await liveDeviceIdByTokenHash(ctx.store.db, hashToken(token)) : undefined;
        if (!dev) throw failedAuth(ctx, req.ip, new HttpError(401, 'device or admin token required'));
        // Devices get only what they could be offered: content of approved releases.
        if (!(await approvedBlobs.has(sha256))) throw new HttpError(404, `no blob ${sha256}`);
      }
      if (!ctx.blobs.has(sha256)) throw new HttpError(404, `no blob ${sha256}`);
      return sendBlob(ctx, sha256, req.headers.range, reply);
    },
  );
}

/** The device plugin: `await devicePlugin(app, ctx)` registers the device protocol's routes. */
export async function devicePlugin(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  await app.register(async (scope) => registerDeviceRoutes(scope, ctx));
}
