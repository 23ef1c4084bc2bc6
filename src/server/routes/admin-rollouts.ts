// Admin API for plans and rollouts: each route validates its input, calls a service and shapes the answer.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.ts';
import type { Channel } from '../db/rollouts.ts';
import { callerOf } from '../operator-request.ts';
import type { Permission } from '../roles.ts';
import { applyPlan, plansWithTimes } from '../services/plans.ts';
import { type RolloutView, rolloutView, rolloutViews } from '../services/rollout-view.ts';
import {
  type RolloutAction,
  startDryRun,
  startRollout,
  steerRollout,
  stopAll,
} from '../services/rollouts.ts';
import { actorOf } from './admin-releases.ts';
import {
  arrayOf,
  DryRunSchema,
  integer,
  objectOf,
  PlanSchema,
  RolloutViewSchema,
} from './schemas/answers.ts';

export type { RolloutView, WaveCounts } from '../services/rollout-view.ts';

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1 } },
} as const;

const planBody = {
  type: 'object',
  required: ['source'],
  additionalProperties: false,
  properties: {
    source: { type: 'string', maxLength: 200_000 },
    file: { type: 'string', maxLength: 500 },
    allow_wide: { type: 'boolean' },
    // Required with allow_wide (400 without), recorded in the audit entry.
    reason: { type: 'string', maxLength: 1000 },
  },
} as const;

const startBody = {
  type: 'object',
  required: ['release', 'plan'],
  additionalProperties: false,
  properties: {
    release: { type: 'string', maxLength: 260 },
    plan: { type: 'string', maxLength: 128 },
    emergency: { type: 'boolean' },
    channel: { type: 'string', enum: ['early', 'general'] },
    supersede: { type: 'boolean' },
    force: { type: 'boolean' },
    // Required with emergency, force or allow_wide (400 without), recorded in the audit entry.
    reason: { type: 'string', maxLength: 1000 },
    allow_wide: { type: 'boolean' },
    dry_run: { type: 'boolean' },
  },
} as const;

const reasonBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 1000 } },
} as const;

/** The bodies as the schemas above validated them. */
interface PlanBody {
  source: string;
  file?: string;
  allow_wide?: boolean;
  reason?: string;
}
interface StartBody {
  release: string;
  plan: string;
  emergency?: boolean;
  channel?: Channel;
  supersede?: boolean;
  force?: boolean;
  reason?: string;
  allow_wide?: boolean;
  dry_run?: boolean;
}
type IdRequest = FastifyRequest<{ Params: { id: number } }>;

const ACTIONS: readonly RolloutAction[] = ['pause', 'resume', 'abort', 'approve', 'rollback', 'retry'];

/** Approving a wave is an approver's act; every other action on a rollout is an operator's. */
const permissionOf = (action: RolloutAction): Permission => (action === 'approve' ? 'approve' : 'operate');

/** Registers the plan and rollout routes (inside the admin plugin). */
export function adminRolloutRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  /** POST /v1/admin/plans: validate, check against the fleet, store. */
  const putPlan = async (req: FastifyRequest<{ Body: PlanBody }>) =>
    applyPlan(
      db,
      {
        source: req.body.source,
        file: req.body.file,
        allowWide: req.body.allow_wide,
        reason: req.body.reason,
        mayTurnOffFourEyes: callerOf(req).role === 'admin',
        prometheus: ctx.prometheus,
      },
      ctx.clock(),
      actorOf(req),
    );

  /** POST /v1/admin/rollouts: start one (201 with its view), or show what it would do (dry_run). */
  const start = async (req: FastifyRequest<{ Body: StartBody }>, reply: FastifyReply) => {
    const b = req.body;
    const request = {
      release: b.release,
      plan: b.plan,
      emergency: b.emergency,
      channel: b.channel,
      supersede: b.supersede,
      force: b.force,
      reason: b.reason,
      allowWide: b.allow_wide,
      actor: actorOf(req),
    };
    if (b.dry_run) return startDryRun(ctx, request);
    const id = await startRollout(ctx, request);
    reply.code(201);
    return rolloutView(db, id, ctx.governance);
  };

  /** POST /v1/admin/rollouts/:id/<action>: steer one rollout; 409 when the action cannot apply. */
  const steer =
    (action: RolloutAction) =>
    async (
      req: FastifyRequest<{ Params: { id: number }; Body: { reason?: string } | null }>,
    ): Promise<RolloutView> => {
      await steerRollout(ctx, req.params.id, action, { reason: req.body?.reason, actor: actorOf(req) });
      return rolloutView(db, req.params.id, ctx.governance);
    };

  app.post<{ Body: PlanBody }>(
    '/v1/admin/plans',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'applyPlan',
        summary: 'Create or replace a plan from YAML (validated; errors name line and field)',
        tags: ['plans'],
        body: planBody,
        response: { 200: PlanSchema },
      },
    },
    putPlan,
  );
  app.get(
    '/v1/admin/plans',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'listPlans',
        summary: 'List plans',
        tags: ['plans'],
        response: { 200: arrayOf(PlanSchema) },
      },
    },
    () => plansWithTimes(db),
  );
  app.post<{ Body: StartBody }>(
    '/v1/admin/rollouts',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'startRollout',
        summary: 'Start a rollout of an approved release through a plan',
        description: 'Answers 201 with the new rollout, or 200 with what it would do when `dry_run` is set.',
        tags: ['rollouts'],
        body: startBody,
        response: {
          200: { ...DryRunSchema, description: 'dry_run: what each wave would select; nothing started' },
          201: { ...RolloutViewSchema, description: 'The rollout started' },
        },
      },
    },
    start,
  );
  app.get(
    '/v1/admin/rollouts',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'listRollouts',
        summary: 'List rollouts',
        tags: ['rollouts'],
        response: { 200: arrayOf(RolloutViewSchema) },
      },
    },
    () => rolloutViews(db, ctx.governance),
  );
  app.get(
    '/v1/admin/rollouts/:id',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'getRollout',
        summary: 'One rollout with per-wave counts, its starter and what awaits whose approval',
        tags: ['rollouts'],
        params: idParams,
        response: { 200: RolloutViewSchema },
      },
    },
    (req: IdRequest) => rolloutView(db, req.params.id, ctx.governance),
  );
  for (const action of ACTIONS) {
    app.post<{ Params: { id: number }; Body: { reason?: string } | null }>(
      `/v1/admin/rollouts/:id/${action}`,
      {
        config: { permission: permissionOf(action) },
        schema: {
          operationId: `${action}Rollout`,
          summary: `${action[0].toUpperCase()}${action.slice(1)} a rollout`,
          tags: ['rollouts'],
          params: idParams,
          body: reasonBody,
          response: { 200: RolloutViewSchema },
        },
      },
      steer(action),
    );
  }
  app.post<{ Body: { reason?: string } | null }>(
    '/v1/admin/rollouts/stop-all',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'stopAllRollouts',
        summary: 'Kill switch: pause every active rollout (a reason is required, audited)',
        tags: ['rollouts'],
        body: reasonBody,
        response: { 200: objectOf({ paused: arrayOf(integer) }) },
      },
    },
    async (req) => ({ paused: await stopAll(ctx, { actor: actorOf(req), reason: req.body?.reason }) }),
  );
}
