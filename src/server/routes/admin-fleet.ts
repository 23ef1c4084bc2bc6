// Admin API for the fleet: enrollment tokens, devices, holds and pins (which always win), and the audit log.
// Each route validates, calls a service (../services/fleet.ts) and shapes the view.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import Type from 'typebox';
import type { ServerContext } from '../context.ts';
import { listAudit, verifyAudit } from '../db/audit.ts';
import type { FleetControls } from '../db/devices.ts';
import { findRelease } from '../db/releases.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import { callerOf, type RequestOperator } from '../operator-request.ts';
import {
  type ControlChange,
  changeControls,
  createEnrollToken,
  type DeviceWithComponents,
  findDevice,
  listDevices,
  retireDevice,
  revokeEnrollToken,
} from '../services/fleet.ts';
import { parseRef } from '../services/release-ref.ts';
import {
  AuditQuery,
  EnrollTokenBody,
  IdParams,
  PathId,
  RetireBody,
  SelectorBody,
} from './admin-fleet-schemas.ts';
import {
  AuditEntrySchema,
  arrayOf,
  boolean,
  DeviceSummarySchema,
  integer,
  nullable,
  objectOf,
  SelectedDevices,
  string,
} from './schemas/answers.ts';

/** The answers' schemas, typed as the views they serialise (the type provider checks the handlers against them). */
const DeviceSummaryAnswer = Type.Unsafe<DeviceSummary>(DeviceSummarySchema);
const SelectedAnswer = Type.Unsafe<{ devices: string[] }>(SelectedDevices);

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

/** The admin view of a device. */
function summary({ device: d, components }: DeviceWithComponents): DeviceSummary {
  return {
    id: d.id,
    name: d.name,
    labels: d.labels,
    agent_version: d.agentVersion,
    last_seen_at: d.lastSeenAt,
    held: d.held,
    pins: d.pins,
    channel: d.channel,
    deferred_until: d.deferredUntil,
    components: components.map((c) => ({
      name: c.name,
      version: c.version,
      state: c.state,
      health: c.health,
      quarantined: c.quarantined,
    })),
  };
}

/** A device by id or name, or 404. */
async function deviceOr404(ctx: ServerContext, key: string): Promise<DeviceWithComponents> {
  const d = await findDevice(ctx.store.db, key);
  if (!d) throw notFound(`no device ${key}`);
  return d;
}

/** Applies `change` to the devices the body's selector matches; audited as `action` by `actor`. */
function bySelector(
  ctx: ServerContext,
  actor: string,
  b: SelectorBody,
  action: string,
  detail: Record<string, unknown>,
  change: (c: FleetControls) => FleetControls,
  maxDevices?: ControlChange['maxDevices'],
): Promise<{ devices: string[] }> {
  return changeControls(
    ctx.store.db,
    { actor, selector: b.selector, allowEmpty: b.allow_empty, action, detail, change, maxDevices },
    ctx.clock(),
    ctx.wake.bus,
  );
}

/**
 * Pins to an approved release NAME@V. A pin reaches its devices at once, past every wave, failure budget and
 * approval, so a non-admin may pin at most `governance.pin_max_devices` devices at a time.
 */
async function pin(ctx: ServerContext, caller: RequestOperator, b: SelectorBody) {
  if (!b.release) throw badRequest('pin needs a release NAME@V');
  const { component, version } = parseRef(b.release);
  const rel = await findRelease(ctx.store.db, component, version);
  if (!rel) throw notFound(`no release ${b.release}`);
  if (rel.approvedAt === null) throw conflict(`release ${b.release} is not approved`);
  const limit = ctx.governance.pinMaxDevices;
  const maxDevices =
    caller.role === 'admin'
      ? undefined
      : {
          limit,
          refusal: (n: number) =>
            `pinning ${n} devices at once needs role admin (governance.pin_max_devices: ${limit}): a pin skips every wave and approval; roll the release out instead`,
        };
  return bySelector(
    ctx,
    caller.actor,
    b,
    'fleet.pin',
    { release: b.release },
    (c) => ({ ...c, pins: { ...c.pins, [component]: version } }),
    maxDevices,
  );
}

/** Removes the pin of one component. */
function unpin(ctx: ServerContext, actor: string, b: SelectorBody) {
  const component = b.component;
  if (!component) throw badRequest('unpin needs a component');
  return bySelector(ctx, actor, b, 'fleet.unpin', { component }, (c) => {
    const pins = { ...c.pins };
    delete pins[component];
    return { ...c, pins };
  });
}

/** Defers devices until an instant (null clears the deferral). */
function defer(ctx: ServerContext, actor: string, b: SelectorBody) {
  const until = b.until;
  if (until === undefined) throw badRequest('defer needs `until` (ms since epoch, or null to clear)');
  const action = until === null ? 'fleet.undefer' : 'fleet.defer';
  return bySelector(ctx, actor, b, action, { until, reason: b.reason }, (c) => ({
    ...c,
    deferredUntil: until,
  }));
}

/** Moves devices to the early or the general channel. */
function channel(ctx: ServerContext, actor: string, b: SelectorBody) {
  const ch = b.channel;
  if (!ch) throw badRequest('channel must be early or general');
  return bySelector(ctx, actor, b, 'fleet.channel', { channel: ch }, (c) => ({ ...c, channel: ch }));
}

/** The enrollment-token and device routes. */
function deviceAdminRoutes(base: FastifyInstance, ctx: ServerContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const { db } = ctx.store;
  app.post(
    '/v1/admin/enroll-tokens',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'createEnrollToken',
        summary: 'Create an enrollment token (single-use by default); shown once',
        tags: ['fleet'],
        body: EnrollTokenBody,
        response: { 201: objectOf({ id: string, token: string, uses: nullable('integer') }) },
      },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      const created = await createEnrollToken(
        db,
        { uses: b.uses, expiresInS: b.expires_in_s, labels: b.labels },
        ctx.clock(),
        callerOf(req).actor,
      );
      reply.code(201);
      return created;
    },
  );

  app.post(
    '/v1/admin/enroll-tokens/:id/revoke',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'revokeEnrollToken',
        summary: 'Revoke an enrollment token',
        tags: ['fleet'],
        params: PathId,
        response: {
          200: Type.Unsafe<{ id: string; revoked: boolean }>(objectOf({ id: string, revoked: boolean })),
        },
      },
    },
    async (req) => {
      await revokeEnrollToken(db, req.params.id, ctx.clock(), callerOf(req).actor);
      return { id: req.params.id, revoked: true };
    },
  );

  app.get(
    '/v1/admin/devices',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'listDevices',
        summary: 'List devices with their components',
        tags: ['fleet'],
        response: { 200: Type.Array(DeviceSummaryAnswer) },
      },
    },
    async () => {
      return (await listDevices(db)).map(summary);
    },
  );

  app.get(
    '/v1/admin/devices/:id',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'getDevice',
        summary: 'One device by id or name',
        tags: ['fleet'],
        params: PathId,
        response: { 200: DeviceSummaryAnswer },
      },
    },
    async (req) => summary(await deviceOr404(ctx, req.params.id)),
  );

  app.post(
    '/v1/admin/devices/:id/retire',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'retireDevice',
        summary: 'Retire a device: its token is revoked, it leaves every rollout, its history stays',
        tags: ['fleet'],
        params: IdParams,
        body: RetireBody,
        response: {
          200: objectOf({ id: string, name: string, retired: boolean, left_rollouts: integer }),
        },
      },
    },
    async (req) => {
      const { device } = await deviceOr404(ctx, req.params.id);
      const { leftRollouts } = await retireDevice(
        db,
        device,
        req.body?.reason,
        ctx.clock(),
        ctx.wake.bus,
        callerOf(req).actor,
      );
      return { id: device.id, name: device.name, retired: true, left_rollouts: leftRollouts };
    },
  );
}

/** The selector routes: the per-device controls that always win over rollouts. */
function controlRoutes(base: FastifyInstance, ctx: ServerContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const route = (
    path: string,
    operationId: string,
    summary: string,
    handle: (caller: RequestOperator, b: SelectorBody) => Promise<{ devices: string[] }>,
  ) =>
    app.post(
      path,
      {
        config: { permission: 'operate' },
        schema: {
          operationId,
          summary,
          tags: ['fleet'],
          body: SelectorBody,
          response: { 200: SelectedAnswer },
        },
      },
      async (req: FastifyRequest<{ Body: SelectorBody }>) => handle(callerOf(req), req.body),
    );
  route('/v1/admin/fleet/hold', 'holdDevices', 'Hold devices: no rollout offers them anything', (caller, b) =>
    bySelector(ctx, caller.actor, b, 'fleet.hold', { reason: b.reason }, (c) => ({ ...c, held: true })),
  );
  route('/v1/admin/fleet/unhold', 'unholdDevices', 'Release a hold', (caller, b) =>
    bySelector(ctx, caller.actor, b, 'fleet.unhold', { reason: b.reason }, (c) => ({ ...c, held: false })),
  );
  route('/v1/admin/fleet/pin', 'pinDevices', 'Pin devices to NAME@V (wins over rollouts)', (caller, b) =>
    pin(ctx, caller, b),
  );
  route('/v1/admin/fleet/unpin', 'unpinDevices', 'Remove a pin for a component', (caller, b) =>
    unpin(ctx, caller.actor, b),
  );
  route(
    '/v1/admin/fleet/defer',
    'deferDevices',
    'Defer devices: nothing is offered before `until` (ms since epoch; null clears it)',
    (caller, b) => defer(ctx, caller.actor, b),
  );
  route(
    '/v1/admin/fleet/channel',
    'setDeviceChannel',
    'Put devices on the early or the general channel',
    (caller, b) => channel(ctx, caller.actor, b),
  );
}

/** The audit log routes. */
function auditRoutes(base: FastifyInstance, ctx: ServerContext): void {
  const app = base.withTypeProvider<TypeBoxTypeProvider>();
  const { db } = ctx.store;
  app.get(
    '/v1/admin/audit',
    {
      config: { permission: 'read' },
      schema: {
        summary:
          'The newest audit log entries (at most 1000), oldest first; `actor` NAME matches NAME and NAME/<token>',
        operationId: 'listAudit',
        tags: ['audit'],
        querystring: AuditQuery,
        response: { 200: arrayOf(AuditEntrySchema) },
      },
    },
    async (req) =>
      listAudit(db, { limit: req.query.limit, subject: req.query.subject, actor: req.query.actor }),
  );

  app.get(
    '/v1/admin/audit/verify',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'verifyAudit',
        summary: 'Verify the audit hash chain: how many entries, the first broken one (null: none), ok',
        tags: ['audit'],
        response: { 200: objectOf({ entries: integer, brokenAt: nullable('integer'), ok: boolean }) },
      },
    },
    async () => {
      const res = await verifyAudit(db);
      return { ...res, ok: res.brokenAt === null };
    },
  );
}

/** Registers the fleet and audit admin routes (inside the admin plugin's authenticated scope). */
export function adminFleetRoutes(app: FastifyInstance, ctx: ServerContext): void {
  deviceAdminRoutes(app, ctx);
  controlRoutes(app, ctx);
  auditRoutes(app, ctx);
}
