// Admin API for plans and rollouts: apply plans, start rollouts and steer them.
import type { FastifyInstance } from 'fastify';
import { analysePlan } from '../../engine/exposure.ts';
import { type Plan, PlanError, parsePlan } from '../../engine/plan.ts';
import {
  ACTIVE,
  type EngineEvent,
  eventRefusal,
  newRollout,
  type RolloutState,
  type RolloutStatus,
} from '../../engine/rollout.ts';
import { type Labels, matches, parseSelector } from '../../engine/selector.ts';
import { selectWaveDevices } from '../../engine/wave-selection.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { deviceViews } from '../rollout-driver.ts';
import { parseRef } from './admin-releases.ts';

export interface RolloutView {
  id: number;
  component: string;
  version: string;
  plan: string;
  channel: string | null;
  status: string;
  wave: string | null;
  wave_index: number;
  waves: WaveCounts[];
  exposed: number;
  state: RolloutState;
  created_at: number;
  updated_at: number;
}

/**
 * One wave's counts. Each means one thing and never goes down as the rollout moves on (a revert does not turn a
 * failure into something else): `offered` devices were sent the release; of those, `succeeded`, `failed` (the
 * device reported a failure or a refusal, or did not report before the deadline; including `rolled_back`) and `rolled_back` (the device undid it by
 * itself) are the devices' own verdicts; `reverted` were put back by the rollout and confirmed; `unconfirmed`
 * were told to revert and did not confirm before the deadline; `skipped` were selected but never offered.
 */
export interface WaveCounts {
  name: string;
  selected: number;
  offered: number;
  succeeded: number;
  failed: number;
  rolled_back: number;
  reverted: number;
  unconfirmed: number;
  skipped: number;
}

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1 } },
} as const;

export function adminRolloutRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  app.post(
    '/v1/admin/plans',
    {
      schema: {
        summary: 'Create or replace a plan from YAML (validated; errors name line and field)',
        tags: ['plans'],
        body: {
          type: 'object',
          required: ['source'],
          additionalProperties: false,
          properties: {
            source: { type: 'string', maxLength: 200_000 },
            file: { type: 'string', maxLength: 500 },
            allow_wide: { type: 'boolean' },
          },
        },
      },
    },
    async (req) => {
      const body = req.body as { source: string; file?: string; allow_wide?: boolean };
      let plan: Plan;
      try {
        plan = parsePlan(body.source, body.file ?? 'plan.yaml');
      } catch (e) {
        if (e instanceof PlanError) throw new HttpError(400, e.message);
        throw e;
      }
      await refuseWide(db, plan, null, body.allow_wide === true);
      const now = ctx.clock();
      await db.transaction().execute(async (tx) => {
        const row = { source: body.source, plan: JSON.stringify(plan), updated_at: now };
        await tx
          .insertInto('plans')
          .values({ name: plan.name, ...row })
          .onConflict((oc) => oc.column('name').doUpdateSet(row))
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'plan.applied',
          subject: `plan/${plan.name}`,
          detail: { ...plan, allow_wide: body.allow_wide === true },
        });
      });
      return plan;
    },
  );

  app.get('/v1/admin/plans', { schema: { summary: 'List plans', tags: ['plans'] } }, async () => {
    const rows = await db.selectFrom('plans').selectAll().orderBy('name').execute();
    return rows.map((r) => ({ ...(JSON.parse(r.plan) as Plan), updated_at: r.updated_at }));
  });

  app.post(
    '/v1/admin/rollouts',
    {
      schema: {
        summary: 'Start a rollout of an approved release through a plan',
        tags: ['rollouts'],
        body: {
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
            reason: { type: 'string', maxLength: 1000 },
            allow_wide: { type: 'boolean' },
            dry_run: { type: 'boolean' },
          },
        },
      },
    },
    async (req, reply) => {
      const body = req.body as {
        release: string;
        plan: string;
        emergency?: boolean;
        channel?: 'early' | 'general';
        supersede?: boolean;
        force?: boolean;
        reason?: string;
        allow_wide?: boolean;
        dry_run?: boolean;
      };
      const { component, version } = parseRef(body.release);
      // Everything that could refuse the new rollout is checked before anything changes (supersede aborts).
      const planned = JSON.parse((await startable(db, component, version, body.plan)).plan.plan) as Plan;
      if (body.dry_run) return dryRun(db, planned, component, body.channel ?? null, ctx.clock());
      await refuseWide(db, planned, { component, channel: body.channel ?? null }, body.allow_wide === true);
      if (body.channel === 'general') {
        // Promotion: the general channel gets a release only after it completed on the early channel.
        const early = await db
          .selectFrom('rollouts')
          .select('id')
          .where('component', '=', component)
          .where('version', '=', version)
          .where('channel', '=', 'early')
          .where('status', '=', 'completed')
          .executeTakeFirst();
        if (!early && !body.force) {
          throw new HttpError(
            409,
            `${body.release} has not completed on the early channel; promote it there first or pass force (audited)`,
          );
        }
      }
      if (body.supersede) {
        // Explicit operator action: the older active rollout of this component is aborted first, so that one
        // component on one device is never in two rollouts at once.
        const older = await db
          .selectFrom('rollouts')
          .select(['id', 'version'])
          .where('component', '=', component)
          .where('status', 'in', [...ACTIVE])
          .execute();
        for (const o of older) {
          await ctx.driver.stepRollout(
            o.id,
            [
              {
                kind: 'abort',
                actor: 'admin',
                reason: `superseded by ${body.release}${body.reason ? `: ${body.reason}` : ''}`,
              },
            ],
            'admin',
          );
        }
      }
      const now = ctx.clock();
      const id = await db.transaction().execute(async (tx) => {
        const { rel, plan } = await startable(tx, component, version, body.plan);
        const clash = await tx
          .selectFrom('rollouts')
          .select(['id', 'version'])
          .where('component', '=', component)
          .where('status', 'in', [...ACTIVE])
          .executeTakeFirst();
        if (clash) {
          throw new HttpError(
            409,
            `rollout ${clash.id} of ${component}@${clash.version} is still active; finish or abort it, or pass --supersede`,
          );
        }
        const inserted = await tx
          .insertInto('rollouts')
          .values({
            component,
            version,
            plan_name: body.plan,
            plan: plan.plan,
            status: 'pending',
            state: '{}',
            wake_at: now,
            dirty: 1,
            created_at: now,
            updated_at: now,
            channel: body.channel ?? null,
          })
          .returning('id')
          .executeTakeFirstOrThrow();
        const state = newRollout({
          id: String(inserted.id),
          component,
          version,
          emergency: body.emergency ?? false,
          releaseCreatedAt: rel.created_at,
          now,
        });
        await tx
          .updateTable('rollouts')
          .set({ state: JSON.stringify(state) })
          .where('id', '=', inserted.id)
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'rollout.created',
          subject: `rollout/${inserted.id}`,
          detail: {
            release: body.release,
            plan: body.plan,
            emergency: body.emergency ?? false,
            channel: body.channel ?? null,
            supersede: body.supersede ?? false,
            force_promote: body.channel === 'general' && (body.force ?? false),
            allow_wide: body.allow_wide === true,
            reason: body.reason,
          },
        });
        return inserted.id;
      });
      await ctx.driver.stepRollout(id, [], 'admin');
      reply.code(201);
      return rolloutView(ctx, id);
    },
  );

  app.get('/v1/admin/rollouts', { schema: { summary: 'List rollouts', tags: ['rollouts'] } }, async () => {
    const rows = await db.selectFrom('rollouts').select('id').orderBy('id').execute();
    return Promise.all(rows.map((r) => rolloutView(ctx, r.id)));
  });

  app.get(
    '/v1/admin/rollouts/:id',
    { schema: { summary: 'One rollout with per-wave counts', tags: ['rollouts'], params: idParams } },
    async (req) => rolloutView(ctx, (req.params as { id: number }).id),
  );

  for (const action of ['pause', 'resume', 'abort', 'approve', 'rollback', 'retry'] as const) {
    app.post(
      `/v1/admin/rollouts/:id/${action}`,
      {
        schema: {
          summary: `${action[0].toUpperCase()}${action.slice(1)} a rollout`,
          tags: ['rollouts'],
          params: idParams,
          body: {
            type: ['object', 'null'],
            additionalProperties: false,
            properties: { reason: { type: 'string', maxLength: 1000 } },
          },
        },
      },
      async (req) => {
        const id = (req.params as { id: number }).id;
        const reason = (req.body as { reason?: string } | null)?.reason;
        const before = await rolloutView(ctx, id); // 404 for unknown ids
        // An action that cannot apply says so (409) instead of answering with an unchanged rollout.
        const refused = eventRefusal(before.status as RolloutStatus, action);
        if (refused) throw new HttpError(409, `rollout ${id}: ${refused}`);
        const event: EngineEvent =
          action === 'abort' || action === 'rollback'
            ? { kind: action, actor: 'admin', reason }
            : { kind: action, actor: 'admin' };
        await ctx.driver.stepRollout(id, [event], 'admin');
        return rolloutView(ctx, id);
      },
    );
  }

  app.post(
    '/v1/admin/rollouts/stop-all',
    { schema: { summary: 'Kill switch: pause every active rollout', tags: ['rollouts'] } },
    async () => {
      const rows = await db
        .selectFrom('rollouts')
        .select('id')
        .where('status', 'in', ['pending', 'running', 'baking', 'awaiting-approval'])
        .execute();
      for (const r of rows)
        await ctx.driver.stepRollout(r.id, [{ kind: 'pause', actor: 'admin (stop-all)' }], 'admin');
      return { paused: rows.map((r) => r.id) };
    },
  );
}

/** The labels of the live fleet (retired devices excluded), for a channel or for every device. */
/**
 * The labels of the live fleet a plan is measured against (retired devices excluded): for a rollout, the devices
 * of its channel that run its component (the only ones it can offer); for a plan alone, every device.
 */
async function liveFleet(
  db: Db,
  target: { component: string; channel: string | null } | null,
): Promise<Labels[]> {
  if (target) {
    const views = await deviceViews(db, target.component, -1, target.channel);
    return views.filter((v) => v.hasComponent !== false).map((v) => v.labels);
  }
  const rows = await db.selectFrom('devices').select('labels').where('retired_at', 'is', null).execute();
  return rows.map((d) => JSON.parse(d.labels) as Labels);
}

/** Refuses (409) a plan whose first wave is over its cap against the live fleet, unless allowed (audited). */
async function refuseWide(
  db: Db,
  plan: Plan,
  target: { component: string; channel: string | null } | null,
  allowWide: boolean,
): Promise<void> {
  const a = analysePlan(plan, await liveFleet(db, target), { allowWide });
  if (a.problems.length) throw new HttpError(409, a.problems.join('; '));
}

/** What a rollout would do now, wave by wave, without starting it: who is selected, who is left out and why. */
async function dryRun(db: Db, plan: Plan, component: string, channel: string | null, now: number) {
  const views = await deviceViews(db, component, -1, channel);
  const taken = new Set<string>();
  const running = views.filter((v) => v.hasComponent !== false);
  const analysis = analysePlan(
    plan,
    running.map((v) => v.labels),
    {},
  );
  const waves = plan.waves.map((w) => {
    const sel = parseSelector(w.select);
    const { chosen, without } = selectWaveDevices(w, views, taken);
    const excluded = { held: 0, pinned: 0, busy: 0, deferred: 0, no_component: without.length };
    for (const v of views) {
      if (taken.has(v.id) || !matches(sel, v.labels) || v.hasComponent === false) continue;
      if (v.held) excluded.held++;
      else if (v.pinned) excluded.pinned++;
      else if (v.busy) excluded.busy++;
    }
    for (const d of chosen) {
      taken.add(d.id);
      if ((d.deferredUntil ?? 0) > now) excluded.deferred++; // selected, but offered only after the deferral
    }
    for (const d of without) taken.add(d.id);
    return { wave: w.name, selected: chosen.length, excluded };
  });
  return {
    dry_run: true,
    plan: plan.name,
    component,
    fleet: views.length,
    runs_component: running.length,
    waves,
    problems: analysis.problems,
  };
}

/** The approved release and the plan a new rollout needs; throws the HTTP error that refuses it otherwise. */
async function startable(
  db: Db,
  component: string,
  version: string,
  planName: string,
): Promise<{ rel: { created_at: number }; plan: { plan: string } }> {
  const rel = await db
    .selectFrom('releases')
    .select(['approved_at', 'created_at'])
    .where('component', '=', component)
    .where('version', '=', version)
    .executeTakeFirst();
  if (!rel) throw new HttpError(404, `no release ${component}@${version}`);
  if (rel.approved_at === null) {
    throw new HttpError(
      409,
      `release ${component}@${version} is not approved (ringfence release approve ${component}@${version})`,
    );
  }
  const plan = await db.selectFrom('plans').select('plan').where('name', '=', planName).executeTakeFirst();
  if (!plan) throw new HttpError(404, `no plan "${planName}" (ringfence plan apply FILE.yaml)`);
  return { rel, plan };
}

/** Builds the operator's view of a rollout: state plus per-wave counts. */
export async function rolloutView(ctx: ServerContext, id: number): Promise<RolloutView> {
  const row = await ctx.store.db.selectFrom('rollouts').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw new HttpError(404, `no rollout ${id}`);
  const plan = JSON.parse(row.plan) as Plan;
  const state = JSON.parse(row.state) as RolloutState;
  const counts = await ctx.store.db
    .selectFrom('assignments')
    .select([
      'wave',
      'state',
      'outcome',
      (eb) => eb.fn.countAll<number>().as('n'),
      (eb) => eb.fn.count<number>('offered_at').as('offered'),
    ])
    .where('rollout_id', '=', id)
    .groupBy(['wave', 'state', 'outcome'])
    .execute();
  const waves: WaveCounts[] = plan.waves.map((w) => ({
    name: w.name,
    selected: 0,
    offered: 0,
    succeeded: 0,
    failed: 0,
    rolled_back: 0,
    reverted: 0,
    unconfirmed: 0,
    skipped: 0,
  }));
  let exposed = 0;
  for (const c of counts) {
    const w = waves[c.wave];
    const n = Number(c.n);
    if (!w) continue;
    const offered = Number(c.offered);
    w.offered += offered;
    exposed += offered;
    // A skipped device that was offered before (retired, or left to a newer rollout) was selected.
    const neverOffered = c.state === 'skipped' ? n - offered : 0;
    w.skipped += neverOffered;
    w.selected += n - neverOffered;
    if (c.outcome === 'succeeded') w.succeeded += n;
    if (c.outcome === 'failed' || c.outcome === 'rolled-back') w.failed += n;
    if (c.outcome === 'rolled-back') w.rolled_back += n;
    if (c.state === 'reverted' && c.outcome !== 'rolled-back' && c.outcome !== 'failed') w.reverted += n;
    if (c.state === 'unconfirmed') w.unconfirmed += n;
  }
  return {
    id,
    component: row.component,
    version: row.version,
    plan: row.plan_name,
    channel: row.channel,
    status: row.status,
    wave: state.wave >= 0 ? plan.waves[state.wave].name : null,
    wave_index: state.wave,
    waves,
    exposed,
    state,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}
