// The device protocol: enrollment, check-in (state up, desired releases down) and blob download with Range.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { type AssignmentState, applyReport, type DeviceOutcome } from '../../engine/rollout.ts';
import { NAME_RE } from '../../protocol/names.ts';
import { Repository } from '../../trust/repository.ts';
import { CheckinBatcher, type CheckinBody, type CheckinReport } from '../checkin.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { effectiveLabels } from '../labels.ts';
import { boundedDetail } from '../limits.ts';
import { bearer, hashToken, newToken } from '../tokens.ts';

/** Printable text only: device-chosen strings end up in operators' terminals and pages. */
const PRINTABLE = '^[^\\u0000-\\u001f\\u007f-\\u009f]*$';
const LABEL_KEY = '^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$';

const labelsSchema = {
  type: 'object',
  propertyNames: { pattern: LABEL_KEY },
  additionalProperties: { type: 'string', maxLength: 256, pattern: PRINTABLE },
  maxProperties: 64,
} as const;

const enrollBody = {
  type: 'object',
  required: ['token'],
  additionalProperties: false,
  properties: {
    token: { type: 'string', maxLength: 200 },
    name: { type: 'string', minLength: 1, maxLength: 200, pattern: PRINTABLE },
    labels: labelsSchema,
    agent_version: { type: 'string', maxLength: 64, pattern: PRINTABLE },
  },
} as const;

const componentState = {
  type: 'object',
  required: ['name', 'state'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', pattern: NAME_RE.source },
    version: { type: ['string', 'null'], maxLength: 128, pattern: PRINTABLE },
    state: { type: 'string', maxLength: 32, pattern: PRINTABLE },
    health: { type: 'object' },
    quarantined: {
      type: 'array',
      items: { type: 'string', maxLength: 128, pattern: PRINTABLE },
      maxItems: 100,
    },
  },
} as const;

const report = {
  type: 'object',
  required: ['txn_id', 'component', 'version', 'outcome'],
  additionalProperties: false,
  properties: {
    txn_id: { type: 'string', maxLength: 100, pattern: PRINTABLE },
    component: { type: 'string', pattern: NAME_RE.source },
    version: { type: 'string', maxLength: 128, pattern: PRINTABLE },
    from_version: { type: ['string', 'null'], maxLength: 128, pattern: PRINTABLE },
    outcome: { type: 'string', enum: ['succeeded', 'failed', 'rolled-back', 'refused'] },
    class: { type: 'string', maxLength: 32, pattern: PRINTABLE },
    reason: { type: 'string', maxLength: 2000 },
    detail: { type: 'object' },
    at: { type: 'number' },
    offline: { type: 'boolean' },
  },
} as const;

const checkinBody = {
  type: 'object',
  required: ['components'],
  additionalProperties: false,
  properties: {
    labels: labelsSchema,
    agent_version: { type: 'string', maxLength: 64, pattern: PRINTABLE },
    components: { type: 'array', items: componentState, maxItems: 64 },
    reports: { type: 'array', items: report, maxItems: 256 },
  },
} as const;

// A response schema lets Fastify serialise the answer with a compiled serializer (the check-in hot path).
const checkinAnswer = {
  type: 'object',
  properties: {
    poll_seconds: { type: 'number' },
    acked: { type: 'array', items: { type: 'string' } },
    desired: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          component: { type: 'string' },
          version: { type: 'string' },
          artifacts: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                name: { type: 'string' },
                sha256: { type: 'string' },
                length: { type: 'integer' },
                mode: { type: 'integer' },
                url: { type: 'string' },
              },
            },
          },
        },
      },
    },
    tuf_root: { type: 'object', additionalProperties: true },
  },
} as const;

/**
 * What the server ever offered this device, read once per check-in (two set-based reads, not one per report): a
 * rollout assigned the release (as its target, or as the version to revert to) or a pin names it. For an update
 * applied from an offline bundle, an approved release also counts. Reports for anything else are acknowledged
 * and dropped, so a device cannot fill the database with made-up transactions.
 */
class OfferedToDevice {
  private known: Set<string> | null = null;
  private readonly approved = new Map<string, boolean>();

  constructor(
    private readonly tx: Db,
    private readonly deviceId: string,
  ) {}

  async has(r: CheckinReport): Promise<boolean> {
    const key = `${r.component}\u0000${r.version}`;
    if (!this.known) this.known = await this.load();
    if (this.known.has(key)) return true;
    if (r.offline !== true) return false;
    let ok = this.approved.get(key);
    if (ok === undefined) {
      const rel = await this.tx
        .selectFrom('releases')
        .select('id')
        .where('component', '=', r.component)
        .where('version', '=', r.version)
        .where('approved_at', 'is not', null)
        .executeTakeFirst();
      ok = rel !== undefined;
      this.approved.set(key, ok);
    }
    return ok;
  }

  private async load(): Promise<Set<string>> {
    const known = new Set<string>();
    const rows = await this.tx
      .selectFrom('assignments')
      .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
      .select(['rollouts.component', 'rollouts.version', 'assignments.from_version'])
      .where('assignments.device_id', '=', this.deviceId)
      .execute();
    for (const a of rows) {
      known.add(`${a.component}\u0000${a.version}`);
      if (a.from_version !== null) known.add(`${a.component}\u0000${a.from_version}`);
    }
    const dev = await this.tx
      .selectFrom('devices')
      .select('pins')
      .where('id', '=', this.deviceId)
      .executeTakeFirst();
    for (const [c, v] of Object.entries(dev ? (JSON.parse(dev.pins) as Record<string, string>) : {}))
      known.add(`${c}\u0000${v}`);
    return known;
  }
}

/** Applies device reports to the assignments of the rollouts they belong to (idempotent by txn_id). */
function reportApplier(ctx: ServerContext) {
  const { guards, metrics } = ctx;
  /** Records, once per hour and device, that the device went over a quota. */
  const throttled = (tx: Db, deviceId: string, what: string, now: number) =>
    appendAudit(tx, {
      at: now,
      actor: 'server',
      action: 'device.throttled',
      subject: `device/${deviceId}`,
      detail: {
        what,
        per_hour:
          what === 'reports' ? guards.limits.reportsPerDevicePerHour : guards.limits.auditPerDevicePerHour,
      },
    });
  return async function applyReports(
    tx: Db,
    deviceId: string,
    reports: CheckinReport[] | undefined,
    now: number,
  ): Promise<number> {
    let applied = 0;
    const offered = new OfferedToDevice(tx, deviceId);
    for (const r of reports ?? []) {
      if (!(await offered.has(r))) {
        metrics.reportsDropped.inc({ reason: 'unoffered' });
        continue;
      }
      const quota = guards.reports.spend(deviceId);
      if (quota !== 'ok') {
        metrics.reportsDropped.inc({ reason: 'quota' });
        metrics.throttled.inc({ what: 'reports' });
        if (quota === 'first-over') await throttled(tx, deviceId, 'reports', now);
        continue;
      }
      const inserted = await tx
        .insertInto('reports')
        .values({
          txn_id: r.txn_id,
          device_id: deviceId,
          component: r.component,
          version: r.version,
          outcome: r.outcome,
          reason: r.reason ?? null,
          detail: JSON.stringify({
            class: r.class,
            offline: r.offline ?? false,
            ...boundedDetail(r.detail, guards.limits.detailMaxBytes),
          }),
          received_at: now,
        })
        .onConflict((oc) => oc.column('txn_id').doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) continue; // seen before: exactly once
      applied++;
      const rows = await tx
        .selectFrom('assignments')
        .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
        .select([
          'assignments.rollout_id',
          'assignments.wave',
          'assignments.state',
          'assignments.from_version',
          'assignments.offered_at',
          'assignments.reported_at',
          'assignments.reason',
          'assignments.outcome',
          'rollouts.version as target',
        ])
        .where('assignments.device_id', '=', deviceId)
        .where('rollouts.component', '=', r.component)
        .where('assignments.state', 'in', ['offered', 'succeeded', 'reverting', 'unconfirmed'])
        .execute();
      for (const row of rows) {
        const next = applyReport(
          {
            deviceId,
            wave: row.wave,
            state: row.state as AssignmentState,
            fromVersion: row.from_version,
            offeredAt: row.offered_at,
            reportedAt: row.reported_at,
            reason: row.reason,
            outcome: row.outcome as DeviceOutcome | null,
          },
          {
            outcome: r.outcome === 'succeeded' || r.outcome === 'rolled-back' ? r.outcome : 'failed',
            version: r.version,
            target: row.target,
            reason: r.reason ? `${r.class ?? 'failure'}: ${r.reason}` : null,
            at: now,
          },
        );
        if (!next) continue;
        await tx
          .updateTable('assignments')
          .set({
            state: next.state,
            outcome: next.outcome ?? null,
            reported_at: next.reportedAt,
            reason: next.reason,
          })
          .where('rollout_id', '=', row.rollout_id)
          .where('device_id', '=', deviceId)
          .execute();
        await tx.updateTable('rollouts').set({ dirty: 1 }).where('id', '=', row.rollout_id).execute();
      }
      // Failures, refusals (e.g. a TUF verification the device failed) and every offline update stay in the
      // audit trail, within the device's hourly audit quota.
      if (r.outcome !== 'succeeded' || r.offline) {
        const aq = guards.audit.spend(deviceId);
        if (aq === 'ok')
          await appendAudit(tx, {
            at: now,
            actor: `device/${deviceId}`,
            action: `device.${r.outcome}`,
            subject: `device/${deviceId}`,
            detail: {
              component: r.component,
              version: r.version,
              class: r.class,
              reason: r.reason,
              offline: r.offline,
            },
          });
        else {
          metrics.throttled.inc({ what: 'audit' });
          if (aq === 'first-over') await throttled(tx, deviceId, 'audit', now);
        }
      }
    }
    return applied;
  };
}

/**
 * The organisation's current root (root.json, the newest version) for a device to pin, or undefined without
 * keys. The newest, not 1.root.json: keys revoked by a rotation must not be trusted by new devices.
 */
function currentRoot(ctx: ServerContext): unknown {
  const bytes = Repository.open(ctx.dataDir)?.file('root.json');
  return bytes ? JSON.parse(bytes.toString('utf8')) : undefined;
}

/** Blobs that belong to an approved release (approval is final, so hits are cached for the process's life). */
class ApprovedBlobs {
  private readonly known = new Set<string>();
  constructor(private readonly db: Db) {}

  async has(sha256: string): Promise<boolean> {
    if (this.known.has(sha256)) return true;
    if (!/^[0-9a-f]{64}$/.test(sha256)) return false; // also keeps LIKE's wildcards out of the pattern
    const hit = await this.db
      .selectFrom('releases')
      .select('id')
      .where('approved_at', 'is not', null)
      .where('artifacts', 'like', `%"${sha256}"%`)
      .executeTakeFirst();
    if (hit) this.known.add(sha256);
    return hit !== undefined;
  }
}

/** A 401 counts against the address; past its budget the answer becomes 429. Other errors pass through. */
function failedAuth(ctx: ServerContext, ip: string, e: unknown): unknown {
  if (!(e instanceof HttpError) || e.statusCode !== 401) return e;
  if (ctx.guards.failedAuth.take(ip)) return e;
  ctx.metrics.throttled.inc({ what: 'auth' });
  return new HttpError(429, 'too many failed authentications from this address');
}

export function deviceRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;
  const batcher = new CheckinBatcher(ctx, reportApplier(ctx));
  const approvedBlobs = new ApprovedBlobs(db);

  app.post(
    '/v1/enroll',
    {
      schema: {
        summary: 'Enroll a device with an enrollment token; returns its own device token (shown once)',
        tags: ['device'],
        body: enrollBody,
      },
    },
    async (req) => {
      const body = req.body as {
        token: string;
        name?: string;
        labels?: Record<string, string>;
        agent_version?: string;
      };
      if (!ctx.guards.enrollments.take(req.ip)) {
        ctx.metrics.throttled.inc({ what: 'enroll' });
        throw new HttpError(429, 'too many enrollments from this address; try again later');
      }
      const now = ctx.clock();
      try {
        return await db.transaction().execute(async (tx) => {
          const tok = await tx
            .selectFrom('enroll_tokens')
            .selectAll()
            .where('token_hash', '=', hashToken(body.token))
            .executeTakeFirst();
          if (
            !tok ||
            tok.revoked === 1 ||
            (tok.expires_at !== null && tok.expires_at < now) ||
            tok.uses_left === 0
          ) {
            throw new HttpError(401, 'unknown, used up, expired or revoked enrollment token');
          }
          const id = `dev-${randomUUID().slice(0, 12)}`;
          const name = body.name ?? id;
          const clash = await tx
            .selectFrom('devices')
            .select('id')
            .where('name', '=', name)
            .where('retired_at', 'is', null)
            .executeTakeFirst();
          if (clash)
            throw new HttpError(409, `a device named "${name}" is enrolled already (retire it first)`);
          const enrollLabels = JSON.parse(tok.labels) as Record<string, string>;
          const labels = effectiveLabels(ctx, body.labels ?? {}, enrollLabels);
          if (tok.uses_left !== null) {
            await tx
              .updateTable('enroll_tokens')
              .set({ uses_left: tok.uses_left - 1 })
              .where('id', '=', tok.id)
              .execute();
          }
          const token = newToken('dev');
          await tx
            .insertInto('devices')
            .values({
              id,
              name,
              token_hash: hashToken(token),
              labels: JSON.stringify(labels),
              enroll_labels: JSON.stringify(enrollLabels),
              agent_version: body.agent_version ?? 'unknown',
              enrolled_at: now,
              last_seen_at: now,
              held: 0,
              pins: '{}',
              retired_at: null,
            })
            .execute();
          await appendAudit(tx, {
            at: now,
            actor: `enroll-token/${tok.id}`,
            action: 'device.enrolled',
            subject: `device/${id}`,
            detail: { name, labels },
          });
          return {
            device_id: id,
            device_token: token,
            poll_seconds: ctx.pollSeconds,
            tuf_root: currentRoot(ctx),
          };
        });
      } catch (e) {
        throw failedAuth(ctx, req.ip, e);
      }
    },
  );

  app.post(
    '/v1/checkin',
    {
      schema: {
        summary: 'Device check-in: report component states and transaction results; receive desired releases',
        tags: ['device'],
        body: checkinBody,
        response: { 200: checkinAnswer },
      },
      // Limits first, before the body is read or parsed: a refused check-in costs next to nothing.
      onRequest: async (req) => {
        const token = bearer(req.headers.authorization);
        const hash = token ? hashToken(token) : null;
        if (!hash) throw failedAuth(ctx, req.ip, new HttpError(401, 'device token required'));
        // An address that keeps presenting bad tokens gets 429 without the batch; a valid token always passes
        // (one indexed lookup unless it checked in recently), so honest devices behind that address keep working.
        if (ctx.guards.failedAuth.exhausted(req.ip) && !ctx.guards.knownDevices.has(hash)) {
          const dev = await db
            .selectFrom('devices')
            .select('id')
            .where('token_hash', '=', hash)
            .where('retired_at', 'is', null)
            .executeTakeFirst();
          if (!dev) throw failedAuth(ctx, req.ip, new HttpError(401, 'unknown device token'));
          ctx.guards.rememberDevice(hash);
        }
        if (!ctx.guards.checkins.take(hash)) {
          ctx.metrics.throttled.inc({ what: 'checkin' });
          throw new HttpError(429, 'check-ins too frequent for this device; keep to the poll interval');
        }
      },
    },
    async (req) => {
      const end = ctx.metrics.checkinSeconds.startTimer();
      const body = req.body as CheckinBody;
      const hash = hashToken(bearer(req.headers.authorization) ?? ''); // present: checked in onRequest
      // Concurrent check-ins share one transaction (group commit); see ../checkin.ts.
      let result: Awaited<ReturnType<typeof batcher.submit>>;
      try {
        result = await batcher.submit(hash, body);
      } catch (e) {
        throw failedAuth(ctx, req.ip, e);
      }
      ctx.guards.rememberDevice(hash);
      ctx.metrics.checkins.inc();
      for (const r of body.reports ?? []) ctx.metrics.reports.inc({ outcome: r.outcome });
      end();
      // A device with no pinned root (enrolled before `keys init`) gets the root to pin (trust on first use).
      const unverified = body.components.some((c) => c.health?.trust === 'unverified');
      return {
        poll_seconds: ctx.pollSeconds,
        desired: result.desired,
        acked: (body.reports ?? []).map((r) => r.txn_id),
        ...(unverified ? { tuf_root: currentRoot(ctx) } : {}),
      };
    },
  );

  app.get(
    '/v1/blobs/:sha256',
    {
      schema: {
        summary: 'Download a content-addressed blob (device or admin token); supports a single HTTP Range',
        tags: ['device'],
        params: {
          type: 'object',
          required: ['sha256'],
          properties: { sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
        },
      },
    },
    async (req, reply) => {
      const token = bearer(req.headers.authorization);
      const { sha256 } = req.params as { sha256: string };
      if (!(await ctx.admin.matches(token))) {
        const dev = token
          ? await db
              .selectFrom('devices')
              .select('id')
              .where('token_hash', '=', hashToken(token))
              .where('retired_at', 'is', null)
              .executeTakeFirst()
          : undefined;
        if (!dev) throw failedAuth(ctx, req.ip, new HttpError(401, 'device or admin token required'));
        // Devices get only what they could be offered: content of approved releases.
        if (!(await approvedBlobs.has(sha256))) throw new HttpError(404, `no blob ${sha256}`);
      }
      if (!ctx.blobs.has(sha256)) throw new HttpError(404, `no blob ${sha256}`);
      const size = ctx.blobs.size(sha256);
      reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream');
      reply.header('cache-control', 'public, max-age=31536000, immutable').header('etag', `"${sha256}"`);
      const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (req.headers.range && range) {
        let start = range[1] === '' ? size - Number(range[2]) : Number(range[1]);
        let end = range[1] === '' || range[2] === '' ? size - 1 : Number(range[2]);
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
    },
  );
}
