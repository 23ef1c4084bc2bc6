// Imperative shell around the pure engine: loads a rollout and its fleet, runs one step, and persists the
// new state, the assignments and the device commands in one database transaction.
import type { Logger } from 'pino';
import type { Plan } from '../engine/plan.ts';
import {
  ACTIVE,
  type Assignment,
  type AssignmentState,
  type DeviceOutcome,
  type DeviceView,
  type EngineEvent,
  type RolloutState,
  type StepOutput,
  step,
} from '../engine/rollout.ts';
import { appendAudit } from './db/audit.ts';
import type { Db, Store } from './db/database.ts';

const CHUNK = 400;

/** States a device reports for a component when its own local controls keep it where it is. */
const LOCALLY_HELD = new Set(['held', 'pinned']);
/** Component states with no transaction open on the device. */
const SETTLED = new Set(['idle', 'held', 'pinned']);

/**
 * Devices as one rollout's engine sees them, for a component. A rollout scoped to a channel sees only that
 * channel's devices. Operator holds and the device's own hold or pin both count as held.
 */
export async function deviceViews(
  db: Db,
  component: string,
  rolloutId: number,
  channel: string | null = null,
): Promise<DeviceView[]> {
  let dq = db
    .selectFrom('devices')
    .select(['id', 'labels', 'held', 'pins', 'deferred_until', 'last_seen_at'])
    .where('retired_at', 'is', null);
  if (channel) dq = dq.where('channel', '=', channel);
  const [devices, comps, busyRows] = await Promise.all([
    dq.execute(),
    db
      .selectFrom('device_components')
      .select(['device_id', 'version', 'state'])
      .where('component', '=', component)
      .execute(),
    db
      .selectFrom('assignments')
      .innerJoin('rollouts', 'rollouts.id', 'assignments.rollout_id')
      .select('assignments.device_id')
      .where('rollouts.component', '=', component)
      .where('rollouts.id', '!=', rolloutId)
      .where('rollouts.status', 'in', [...ACTIVE])
      .where('assignments.state', 'in', ['queued', 'offered', 'succeeded', 'failed', 'reverting'])
      .execute(),
  ]);
  const version = new Map(comps.map((c) => [c.device_id, c.version]));
  const localHold = new Set(comps.filter((c) => LOCALLY_HELD.has(c.state)).map((c) => c.device_id));
  const settled = new Set(comps.filter((c) => SETTLED.has(c.state)).map((c) => c.device_id));
  const busy = new Set(busyRows.map((b) => b.device_id));
  return devices.map((d) => {
    const pins = JSON.parse(d.pins) as Record<string, string>;
    return {
      id: d.id,
      labels: JSON.parse(d.labels),
      held: d.held === 1 || localHold.has(d.id),
      pinned: Object.hasOwn(pins, component),
      busy: busy.has(d.id),
      version: version.get(d.id) ?? null,
      deferredUntil: d.deferred_until,
      settled: settled.has(d.id),
      seenAt: d.last_seen_at,
      hasComponent: version.has(d.id),
    };
  });
}

export async function loadAssignments(db: Db, rolloutId: number): Promise<Map<string, Assignment>> {
  const rows = await db.selectFrom('assignments').selectAll().where('rollout_id', '=', rolloutId).execute();
  return new Map(
    rows.map((r) => [
      r.device_id,
      {
        deviceId: r.device_id,
        wave: r.wave,
        state: r.state as AssignmentState,
        outcome: r.outcome as DeviceOutcome | null,
        fromVersion: r.from_version,
        offeredAt: r.offered_at,
        reportedAt: r.reported_at,
        reason: r.reason,
      },
    ]),
  );
}

/** Persists one step's output (call inside a transaction). */
async function persist(
  db: Db,
  rolloutId: number,
  out: StepOutput,
  actor: string,
  now: number,
): Promise<void> {
  const r = out.rollout;
  await db
    .updateTable('rollouts')
    .set({ status: r.status, state: JSON.stringify(r), wake_at: out.wakeAt, dirty: 0, updated_at: now })
    .where('id', '=', rolloutId)
    .execute();
  for (let i = 0; i < out.changed.length; i += CHUNK) {
    const rows = out.changed.slice(i, i + CHUNK).map((a) => ({
      rollout_id: rolloutId,
      device_id: a.deviceId,
      wave: a.wave,
      state: a.state,
      outcome: a.outcome ?? null,
      from_version: a.fromVersion,
      offered_at: a.offeredAt,
      reported_at: a.reportedAt,
      reason: a.reason,
    }));
    await db
      .insertInto('assignments')
      .values(rows)
      .onConflict((oc) =>
        oc.columns(['rollout_id', 'device_id']).doUpdateSet((eb) => ({
          wave: eb.ref('excluded.wave'),
          state: eb.ref('excluded.state'),
          outcome: eb.ref('excluded.outcome'),
          from_version: eb.ref('excluded.from_version'),
          offered_at: eb.ref('excluded.offered_at'),
          reported_at: eb.ref('excluded.reported_at'),
          reason: eb.ref('excluded.reason'),
        })),
      )
      .execute();
  }
  for (const c of out.commands) {
    if (c.kind === 'offer' || (c.kind === 'revert' && c.version !== null)) {
      await db
        .insertInto('desired')
        .values({
          device_id: c.deviceId,
          component: c.component,
          version: c.version!,
          rollout_id: rolloutId,
          updated_at: now,
        })
        .onConflict((oc) =>
          oc
            .columns(['device_id', 'component'])
            .doUpdateSet({ version: c.version!, rollout_id: rolloutId, updated_at: now }),
        )
        .execute();
    } else {
      await db
        .deleteFrom('desired')
        .where('device_id', '=', c.deviceId)
        .where('component', '=', c.component)
        .execute();
    }
  }
  for (const t of out.transitions) {
    await appendAudit(db, {
      at: t.at,
      actor,
      action: `rollout.${t.to}`,
      subject: `rollout/${rolloutId}`,
      detail: { from: t.from, to: t.to, wave: t.wave, why: t.why },
    });
  }
}

export type StepListener = (rolloutId: number, out: StepOutput) => void;

/** Drives every active rollout: on reports (dirty), on its wake time, and on operator actions. */
export class RolloutDriver {
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private listeners: StepListener[] = [];
  private readonly lastStep = new Map<number, { at: number; tookMs: number }>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  onStep(fn: StepListener): void {
    this.listeners.push(fn);
  }

  start(intervalMs = 250): void {
    this.timer = setInterval(() => {
      this.tick().catch((err) => this.log.error({ err }, 'rollout tick failed'));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.chain.catch(() => {});
  }

  /** Serialises engine steps in this process; PostgreSQL row locks serialise them across replicas. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Steps every rollout that has news or whose wake time has come. */
  async tick(): Promise<void> {
    const now = this.clock();
    const due = await this.store.db
      .selectFrom('rollouts')
      .select(['id', 'wake_at'])
      .where('status', 'in', [...ACTIVE])
      .where((eb) => eb.or([eb('dirty', '=', 1), eb('wake_at', '<=', now)]))
      .execute();
    for (const r of due) {
      // News alone (device reports) waits a few times the last step's cost, so with a large fleet the engine
      // takes at most about a fifth of the server's time and check-ins stay fast. Timers and operator actions
      // are never delayed; a small fleet's steps take milliseconds, so nothing changes there.
      const last = this.lastStep.get(r.id);
      const woke = r.wake_at !== null && r.wake_at <= now;
      if (!woke && last && performance.now() - last.at < last.tookMs * 4) continue;
      await this.stepRollout(r.id, [], 'engine');
    }
  }

  /** Runs one step for a rollout, with operator events if any; returns the new state. */
  stepRollout(id: number, events: EngineEvent[], actor: string): Promise<RolloutState> {
    return this.exclusive(async () => {
      const started = performance.now();
      const now = this.clock();
      const { out } = await this.store.db.transaction().execute(async (tx) => {
        let q = tx.selectFrom('rollouts').selectAll().where('id', '=', id);
        if (this.store.dialect === 'postgres') q = q.forUpdate();
        const row = await q.executeTakeFirst();
        if (!row) throw new Error(`no rollout ${id}`);
        const plan = JSON.parse(row.plan) as Plan;
        const rollout = JSON.parse(row.state) as RolloutState;
        const [assignments, devices] = await Promise.all([
          loadAssignments(tx, id),
          deviceViews(tx, row.component, id, row.channel),
        ]);
        const out = step({ plan, rollout, assignments, devices, events, now });
        await persist(tx, id, out, actor, now);
        return { out };
      });
      const at = performance.now();
      this.lastStep.set(id, { at, tookMs: at - started });
      for (const t of out.transitions) this.log.info({ rollout: id, ...t }, `rollout ${id}: ${t.why}`);
      for (const fn of this.listeners) fn(id, out);
      return out.rollout;
    });
  }
}
