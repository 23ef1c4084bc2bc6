// Admin API for the fleet: enrollment tokens, devices, holds and pins (which always win), and the audit log.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ACTIVE } from '../../engine/rollout.ts';
import { matches, parseSelector } from '../../engine/selector.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { appendAudit, listAudit, verifyAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { hashToken, newToken } from '../tokens.ts';
import { parseRef } from './admin-releases.ts';

export interface DeviceSummary {
  id: string;
  name: string;
  labels: Record<string, string>;
  agent_version: string;
  last_seen_at: number;
  held: boolean;
  pins: Record<string, string>;
  channel: string;
  deferred_until: number | null;
  components: Array<{
    name: string;
    version: string | null;
    state: string;
    health: unknown;
    quarantined: string[];
  }>;
}

async function devices(db: Db, id?: string): Promise<DeviceSummary[]> {
  let q = db.selectFrom('devices').selectAll().where('retired_at', 'is', null).orderBy('name');
  if (id) q = q.where((eb) => eb.or([eb('id', '=', id), eb('name', '=', id)]));
  let rows = await q.execute();
  if (id && rows.length > 1) {
    // A device id always wins; a name that several devices carry is refused rather than guessed.
    const exact = rows.filter((r) => r.id === id);
    if (exact.length !== 1)
      throw new HttpError(409, `${rows.length} devices are named "${id}": use a device id`);
    rows = exact;
  }
  let cq = db.selectFrom('device_components').selectAll();
  if (id) cq = cq.where('device_id', 'in', rows.length ? rows.map((r) => r.id) : ['']);
  const comps = await cq.execute();
  const byDev = new Map<string, DeviceSummary['components']>();
  for (const c of comps) {
    const list = byDev.get(c.device_id) ?? [];
    list.push({
      name: c.component,
      version: c.version,
      state: c.state,
      health: JSON.parse(c.health),
      quarantined: JSON.parse(c.quarantined),
    });
    byDev.set(c.device_id, list);
  }
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    labels: JSON.parse(r.labels),
    agent_version: r.agent_version,
    last_seen_at: r.last_seen_at,
    held: r.held === 1,
    pins: JSON.parse(r.pins),
    channel: r.channel,
    deferred_until: r.deferred_until,
    components: byDev.get(r.id) ?? [],
  }));
}

const selectorBody = {
  type: 'object',
  required: ['selector'],
  additionalProperties: false,
  properties: {
    selector: { type: 'string', maxLength: 1000 },
    release: { type: 'string', maxLength: 260 },
    component: { type: 'string', maxLength: 128 },
    reason: { type: 'string', maxLength: 1000 },
    channel: { type: 'string', enum: ['early', 'general'] },
    until: { type: ['integer', 'null'], minimum: 0 },
    allow_empty: { type: 'boolean' },
  },
} as const;

/** The per-device controls an operator sets by selector; they always win over rollouts. */
interface FleetControls {
  held: number;
  pins: Record<string, string>;
  channel: string;
  deferred_until: number | null;
}

export function adminFleetRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  app.post(
    '/v1/admin/enroll-tokens',
    {
      schema: {
        summary: 'Create an enrollment token (single-use by default); shown once',
        tags: ['fleet'],
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: {
            uses: { type: ['integer', 'null'], minimum: 1 },
            expires_in_s: { type: 'integer', minimum: 1 },
            labels: { type: 'object', additionalProperties: { type: 'string' } },
          },
        },
      },
    },
    async (req, reply) => {
      const body = (req.body ?? {}) as {
        uses?: number | null;
        expires_in_s?: number;
        labels?: Record<string, string>;
      };
      const now = ctx.clock();
      const token = newToken('enr');
      const id = `enr-${randomUUID().slice(0, 8)}`;
      const uses = body.uses === undefined ? 1 : body.uses;
      await db.transaction().execute(async (tx) => {
        await tx
          .insertInto('enroll_tokens')
          .values({
            id,
            token_hash: hashToken(token),
            uses_left: uses,
            expires_at: body.expires_in_s ? now + body.expires_in_s * 1000 : null,
            labels: JSON.stringify(body.labels ?? {}),
            created_at: now,
            revoked: 0,
          })
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'enroll-token.created',
          subject: `enroll-token/${id}`,
          detail: { uses },
        });
      });
      reply.code(201);
      return { id, token, uses };
    },
  );

  app.post(
    '/v1/admin/enroll-tokens/:id/revoke',
    { schema: { summary: 'Revoke an enrollment token', tags: ['fleet'] } },
    async (req) => {
      const { id } = req.params as { id: string };
      const res = await db
        .updateTable('enroll_tokens')
        .set({ revoked: 1 })
        .where('id', '=', id)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) === 0) throw new HttpError(404, `no enrollment token ${id}`);
      return { id, revoked: true };
    },
  );

  app.get(
    '/v1/admin/devices',
    { schema: { summary: 'List devices with their components', tags: ['fleet'] } },
    async () => {
      const list = await devices(db);
      ctx.metrics.devices.set(list.length);
      return list;
    },
  );

  app.get(
    '/v1/admin/devices/:id',
    { schema: { summary: 'One device by id or name', tags: ['fleet'] } },
    async (req) => {
      const [d] = await devices(db, (req.params as { id: string }).id);
      if (!d) throw new HttpError(404, `no device ${(req.params as { id: string }).id}`);
      return d;
    },
  );

  app.post(
    '/v1/admin/devices/:id/retire',
    {
      schema: {
        summary: 'Retire a device: its token is revoked, it leaves every rollout, its history stays',
        tags: ['fleet'],
        params: {
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
        },
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: { reason: { type: 'string', maxLength: 1000 } },
        },
      },
    },
    async (req) => {
      const [d] = await devices(db, (req.params as { id: string }).id);
      if (!d) throw new HttpError(404, `no device ${(req.params as { id: string }).id}`);
      const reason = (req.body as { reason?: string } | null)?.reason;
      const now = ctx.clock();
      const left = await db.transaction().execute(async (tx) => {
        await tx
          .updateTable('devices')
          // The token hash becomes a value no token hashes to (hashes are hex): the old token is refused.
          .set({ retired_at: now, token_hash: `retired:${d.id}:${randomUUID()}` })
          .where('id', '=', d.id)
          .execute();
        await tx.deleteFrom('desired').where('device_id', '=', d.id).execute();
        const open = await tx
          .updateTable('assignments')
          .set({ state: 'skipped', reason: 'device retired', reported_at: now })
          .where('device_id', '=', d.id)
          .where('state', 'in', ['queued', 'offered'])
          .executeTakeFirst();
        await tx
          .updateTable('rollouts')
          .set({ dirty: 1 })
          .where('status', 'in', [...ACTIVE])
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'device.retired',
          subject: `device/${d.id}`,
          detail: { name: d.name, reason },
        });
        return Number(open.numUpdatedRows);
      });
      return { id: d.id, name: d.name, retired: true, left_rollouts: left };
    },
  );

  /** Applies a change to every device matching a selector, in one transaction, audited. */
  async function bySelector(
    { selector, allow_empty: allowEmpty = false }: { selector: string; allow_empty?: boolean },
    action: string,
    detail: Record<string, unknown>,
    change: (row: FleetControls) => FleetControls,
  ): Promise<{ devices: string[] }> {
    let sel: ReturnType<typeof parseSelector>;
    try {
      sel = parseSelector(selector);
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    const now = ctx.clock();
    return db.transaction().execute(async (tx) => {
      const rows = await tx
        .selectFrom('devices')
        .select(['id', 'labels', 'held', 'pins', 'channel', 'deferred_until'])
        .where('retired_at', 'is', null)
        .execute();
      const hit: string[] = [];
      for (const r of rows) {
        if (!matches(sel, { ...JSON.parse(r.labels), id: r.id })) continue;
        const next = change({
          held: r.held,
          pins: JSON.parse(r.pins),
          channel: r.channel,
          deferred_until: r.deferred_until,
        });
        await tx
          .updateTable('devices')
          .set({
            held: next.held,
            pins: JSON.stringify(next.pins),
            channel: next.channel,
            deferred_until: next.deferred_until,
          })
          .where('id', '=', r.id)
          .execute();
        hit.push(r.id);
      }
      // A selector that matches nothing is almost always a typo (evn=prod): refuse unless asked for.
      if (hit.length === 0 && !allowEmpty)
        throw new HttpError(404, `selector "${selector}" matches no device (allow_empty to accept)`);
      await appendAudit(tx, {
        at: now,
        actor: 'admin',
        action,
        subject: `selector/${selector}`,
        detail: { ...detail, devices: hit.length },
      });
      await tx.updateTable('rollouts').set({ dirty: 1 }).execute();
      return { devices: hit };
    });
  }

  app.post(
    '/v1/admin/fleet/hold',
    {
      schema: {
        summary: 'Hold devices: no rollout offers them anything',
        tags: ['fleet'],
        body: selectorBody,
      },
    },
    async (req) => {
      const b = req.body as { selector: string; reason?: string };
      return bySelector(b, 'fleet.hold', { reason: b.reason }, (r) => ({ ...r, held: 1 }));
    },
  );

  app.post(
    '/v1/admin/fleet/unhold',
    { schema: { summary: 'Release a hold', tags: ['fleet'], body: selectorBody } },
    async (req) => {
      const b = req.body as { selector: string; reason?: string };
      return bySelector(b, 'fleet.unhold', { reason: b.reason }, (r) => ({ ...r, held: 0 }));
    },
  );

  app.post(
    '/v1/admin/fleet/pin',
    {
      schema: { summary: 'Pin devices to NAME@V (wins over rollouts)', tags: ['fleet'], body: selectorBody },
    },
    async (req) => {
      const b = req.body as { selector: string; release?: string };
      if (!b.release) throw new HttpError(400, 'pin needs a release NAME@V');
      const { component, version } = parseRef(b.release);
      const rel = await db
        .selectFrom('releases')
        .select('approved_at')
        .where('component', '=', component)
        .where('version', '=', version)
        .executeTakeFirst();
      if (!rel) throw new HttpError(404, `no release ${b.release}`);
      if (rel.approved_at === null) throw new HttpError(409, `release ${b.release} is not approved`);
      return bySelector(b, 'fleet.pin', { release: b.release }, (r) => ({
        ...r,
        pins: { ...r.pins, [component]: version },
      }));
    },
  );

  app.post(
    '/v1/admin/fleet/unpin',
    { schema: { summary: 'Remove a pin for a component', tags: ['fleet'], body: selectorBody } },
    async (req) => {
      const b = req.body as { selector: string; component?: string };
      if (!b.component) throw new HttpError(400, 'unpin needs a component');
      const component = b.component;
      return bySelector(b, 'fleet.unpin', { component }, (r) => {
        const pins = { ...r.pins };
        delete pins[component];
        return { ...r, pins };
      });
    },
  );

  app.post(
    '/v1/admin/fleet/defer',
    {
      schema: {
        summary: 'Defer devices: nothing is offered before `until` (ms since epoch; null clears it)',
        tags: ['fleet'],
        body: selectorBody,
      },
    },
    async (req) => {
      const b = req.body as { selector: string; until?: number | null; reason?: string };
      if (b.until === undefined)
        throw new HttpError(400, 'defer needs `until` (ms since epoch, or null to clear)');
      const until = b.until;
      return bySelector(
        b,
        until === null ? 'fleet.undefer' : 'fleet.defer',
        { until, reason: b.reason },
        (r) => ({
          ...r,
          deferred_until: until,
        }),
      );
    },
  );

  app.post(
    '/v1/admin/fleet/channel',
    {
      schema: {
        summary: 'Put devices on the early or the general channel',
        tags: ['fleet'],
        body: selectorBody,
      },
    },
    async (req) => {
      const b = req.body as { selector: string; channel?: string };
      if (!b.channel) throw new HttpError(400, 'channel must be early or general');
      const channel = b.channel;
      return bySelector(b, 'fleet.channel', { channel }, (r) => ({ ...r, channel }));
    },
  );

  app.get(
    '/v1/admin/audit',
    {
      schema: {
        summary: 'The newest audit log entries (at most 1000), oldest first',
        tags: ['audit'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 200 },
            subject: { type: 'string', minLength: 1, maxLength: 300 },
          },
        },
      },
    },
    async (req) => {
      const q = req.query as { limit: number; subject?: string };
      return listAudit(db, { limit: q.limit, subject: q.subject });
    },
  );

  app.get(
    '/v1/admin/audit/verify',
    { schema: { summary: 'Verify the audit hash chain', tags: ['audit'] } },
    async () => {
      const res = await verifyAudit(db);
      return { ...res, ok: res.brokenAt === null };
    },
  );
}
