// The device protocol: enrollment, check-in (state up, desired releases down) and blob download with Range.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { type AssignmentState, applyReport } from '../../engine/rollout.ts';
import { appendAudit } from '../../store/audit.ts';
import type { Db } from '../../store/database.ts';
import { Repository } from '../../trust/repository.ts';
import { CheckinBatcher, type CheckinBody, type CheckinReport } from '../checkin.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { bearer, hashToken, newToken } from '../tokens.ts';

const labelsSchema = {
  type: 'object',
  additionalProperties: { type: 'string', maxLength: 256 },
  maxProperties: 64,
};

const enrollBody = {
  type: 'object',
  required: ['token'],
  additionalProperties: false,
  properties: {
    token: { type: 'string', maxLength: 200 },
    name: { type: 'string', maxLength: 200 },
    labels: labelsSchema,
    agent_version: { type: 'string', maxLength: 64 },
  },
} as const;

const componentState = {
  type: 'object',
  required: ['name', 'state'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: 128 },
    version: { type: ['string', 'null'], maxLength: 128 },
    state: { type: 'string', maxLength: 32 },
    health: { type: 'object' },
    quarantined: { type: 'array', items: { type: 'string', maxLength: 128 }, maxItems: 100 },
  },
} as const;

const report = {
  type: 'object',
  required: ['txn_id', 'component', 'version', 'outcome'],
  additionalProperties: false,
  properties: {
    txn_id: { type: 'string', maxLength: 100 },
    component: { type: 'string', maxLength: 128 },
    version: { type: 'string', maxLength: 128 },
    from_version: { type: ['string', 'null'], maxLength: 128 },
    outcome: { type: 'string', enum: ['succeeded', 'failed', 'rolled-back', 'refused'] },
    class: { type: 'string', maxLength: 32 },
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
    agent_version: { type: 'string', maxLength: 64 },
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

/** Applies device reports to the assignments of the rollouts they belong to (idempotent by txn_id). */
async function applyReports(
  tx: Db,
  deviceId: string,
  reports: CheckinReport[] | undefined,
  now: number,
): Promise<number> {
  let applied = 0;
  for (const r of reports ?? []) {
    const inserted = await tx
      .insertInto('reports')
      .values({
        txn_id: r.txn_id,
        device_id: deviceId,
        component: r.component,
        version: r.version,
        outcome: r.outcome,
        reason: r.reason ?? null,
        detail: JSON.stringify({ class: r.class, offline: r.offline ?? false, ...(r.detail ?? {}) }),
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
        },
        {
          outcome: r.outcome === 'succeeded' ? 'succeeded' : 'failed',
          version: r.version,
          target: row.target,
          reason: r.reason ? `${r.class ?? 'failure'}: ${r.reason}` : null,
          at: now,
        },
      );
      if (!next) continue;
      await tx
        .updateTable('assignments')
        .set({ state: next.state, reported_at: next.reportedAt, reason: next.reason })
        .where('rollout_id', '=', row.rollout_id)
        .where('device_id', '=', deviceId)
        .execute();
      await tx.updateTable('rollouts').set({ dirty: 1 }).where('id', '=', row.rollout_id).execute();
    }
    // Failures, refusals (e.g. a TUF verification the device failed) and every offline update stay in the audit trail.
    if (r.outcome !== 'succeeded' || r.offline) {
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
    }
  }
  return applied;
}

/**
 * The organisation's current root (root.json, the newest version) for a device to pin, or undefined without
 * keys. The newest, not 1.root.json: keys revoked by a rotation must not be trusted by new devices.
 */
function currentRoot(ctx: ServerContext): unknown {
  const bytes = Repository.open(ctx.dataDir)?.file('root.json');
  return bytes ? JSON.parse(bytes.toString('utf8')) : undefined;
}

export function deviceRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;
  const batcher = new CheckinBatcher(ctx, applyReports);

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
      const now = ctx.clock();
      return db.transaction().execute(async (tx) => {
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
        if (tok.uses_left !== null) {
          await tx
            .updateTable('enroll_tokens')
            .set({ uses_left: tok.uses_left - 1 })
            .where('id', '=', tok.id)
            .execute();
        }
        const id = `dev-${randomUUID().slice(0, 12)}`;
        const token = newToken('dev');
        const labels = { ...(body.labels ?? {}), ...JSON.parse(tok.labels) };
        await tx
          .insertInto('devices')
          .values({
            id,
            name: body.name ?? id,
            token_hash: hashToken(token),
            labels: JSON.stringify(labels),
            agent_version: body.agent_version ?? 'unknown',
            enrolled_at: now,
            last_seen_at: now,
            held: 0,
            pins: '{}',
          })
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: `enroll-token/${tok.id}`,
          action: 'device.enrolled',
          subject: `device/${id}`,
          detail: { name: body.name ?? id, labels },
        });
        return {
          device_id: id,
          device_token: token,
          poll_seconds: ctx.pollSeconds,
          tuf_root: currentRoot(ctx),
        };
      });
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
    },
    async (req) => {
      const end = ctx.metrics.checkinSeconds.startTimer();
      const body = req.body as CheckinBody;
      const token = bearer(req.headers.authorization);
      if (!token) throw new HttpError(401, 'device token required');
      // Concurrent check-ins share one transaction (group commit); see ../checkin.ts.
      const result = await batcher.submit(hashToken(token), body);
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
      if (!token) throw new HttpError(401, 'token required');
      const h = hashToken(token);
      const known =
        (await db.selectFrom('devices').select('id').where('token_hash', '=', h).executeTakeFirst()) ??
        (await db
          .selectFrom('meta')
          .select('key')
          .where('key', '=', 'admin_token_hash')
          .where('value', '=', h)
          .executeTakeFirst());
      if (!known) throw new HttpError(401, 'unknown token');
      const { sha256 } = req.params as { sha256: string };
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
