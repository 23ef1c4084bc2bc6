// Rollout operations: start (with the one-active-rollout rule, the promotion gate and supersede), steer
// (pause, resume, abort, approve, rollback, retry) and stop-all. Each runs in ONE database transaction, under
// the driver's lock on steps, and is callable from routes, the CLI's offline commands and tests.
import { type EngineEvent, eventRefusal, newRollout } from '../../engine/rollout.ts';
import { ACTIVE } from '../../engine/rollout-state.ts';
import type { Governance } from '../config.ts';
import { appendAudit } from '../db/audit.ts';
import { type Db, inTransaction, type Store } from '../db/database.ts';
import { findPlan } from '../db/plans.ts';
import { findRelease } from '../db/releases.ts';
import {
  type Channel,
  completedOnChannel,
  findRollout,
  insertRollout,
  rolloutIdsIn,
  rolloutsOfComponentIn,
} from '../db/rollouts.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import type { RolloutDriver, StepsWithin } from '../rollout-driver.ts';
import { refuseWide } from './plans.ts';
import { parseRef } from './release-ref.ts';
import { type DryRun, dryRun } from './rollout-dry-run.ts';
import {
  activeRolloutRefusal,
  approvalRefusal,
  PAUSABLE,
  promotionRefusal,
  reasonRefusal,
  startReasonRefusal,
  supersedeReason,
  waveFourEyesRefusal,
} from './rollout-rules.ts';

/**
 * What rollout operations need: the store, the driver that serialises steps, the clock, and the server-wide
 * governance rules (absent: the defaults, four eyes on).
 */
export interface RolloutDeps {
  store: Store;
  driver: RolloutDriver;
  clock: () => number;
  governance?: Governance;
}

/** A request to start a rollout of `release` ("NAME@VERSION") through plan `plan`. */
export interface StartRollout {
  release: string;
  plan: string;
  emergency?: boolean;
  channel?: Channel;
  /** Abort the component's active rollout in the same transaction (explicit operator action). */
  supersede?: boolean;
  /** Pass the promotion gate without the early channel's completion (audited). */
  force?: boolean;
  /** Why: required for an emergency start, `force` and `allowWide` (recorded in the audit entry). */
  reason?: string;
  allowWide?: boolean;
  /** Who starts it: audited and recorded as its starter (four eyes); without one, nobody is recorded. */
  actor?: string;
}

/** Operator actions on one rollout. */
export type RolloutAction = 'pause' | 'resume' | 'abort' | 'approve' | 'rollback' | 'retry';

/**
 * The release and plan a new rollout needs, with the plan snapshot; refuses a missing (404) or unapproved (409)
 * release and a missing plan (404).
 */
async function startable(db: Db, ref: string, planName: string) {
  const { component, version } = parseRef(ref);
  const rel = await findRelease(db, component, version);
  if (!rel) throw notFound(`no release ${component}@${version}`);
  const unapproved = approvalRefusal(`${component}@${version}`, rel.approvedAt);
  if (unapproved) throw conflict(unapproved);
  const stored = await findPlan(db, planName);
  if (!stored) throw notFound(`no plan "${planName}" (ringfence plan apply FILE.yaml)`);
  return { rel, plan: stored.plan };
}

/** What a start would do now, wave by wave, without changing anything. */
export async function startDryRun(deps: RolloutDeps, req: StartRollout): Promise<DryRun> {
  const { rel, plan } = await startable(deps.store.db, req.release, req.plan);
  return dryRun(deps.store.db, plan, rel.component, req.channel ?? null, deps.clock());
}

/**
 * Starts a rollout and takes its first step; returns its id. Everything that could refuse it is checked, the
 * older rollout superseded (aborted) and the new one created in one transaction: a refusal or a crash at any
 * point leaves every rollout as it was. Emergency, force and allow-wide need a reason (400).
 */
export async function startRollout(deps: RolloutDeps, req: StartRollout): Promise<number> {
  const noReason = startReasonRefusal(req);
  if (noReason) throw badRequest(noReason);
  const { store, driver } = deps;
  const actor = req.actor ?? 'admin';
  const channel = req.channel ?? null;
  const id = await driver.exclusive(async () => {
    const now = deps.clock();
    const steps: StepsWithin = [];
    const created = await inTransaction(store, async (tx) => {
      steps.length = 0; // run again after a deadlock: only the last attempt's steps count
      const { rel, plan } = await startable(tx, req.release, req.plan);
      const { component, version } = rel;
      await refuseWide(tx, plan, { component, channel }, req.allowWide === true);
      const gate = promotionRefusal({
        ref: req.release,
        channel,
        completedOnEarly: await completedOnChannel(tx, component, version, 'early'),
        force: req.force === true,
      });
      if (gate) throw conflict(gate);
      if (req.supersede) {
        // Explicit operator action: the older active rollout of this component is aborted first, so that one
        // component on one device is never in two rollouts at once.
        const reason = supersedeReason(req.release, req.reason);
        for (const o of await rolloutsOfComponentIn(tx, component, ACTIVE))
          steps.push({
            id: o.id,
            out: await driver.within(tx, o.id, [{ kind: 'abort', actor, reason }], actor, now),
          });
      }
      const clash = activeRolloutRefusal(component, await rolloutsOfComponentIn(tx, component, ACTIVE));
      if (clash) throw conflict(clash);
      const newId = await insertRollout(
        tx,
        { component, version, planName: req.plan, plan, channel, now, startedBy: req.actor ?? null },
        (rid) =>
          newRollout({
            id: String(rid),
            component,
            version,
            emergency: req.emergency ?? false,
            releaseCreatedAt: rel.createdAt,
            now,
          }),
      );
      await appendAudit(tx, {
        at: now,
        actor,
        action: 'rollout.created',
        subject: `rollout/${newId}`,
        detail: {
          release: req.release,
          plan: req.plan,
          emergency: req.emergency ?? false,
          channel,
          supersede: req.supersede ?? false,
          force_promote: channel === 'general' && (req.force ?? false),
          allow_wide: req.allowWide === true,
          reason: req.reason,
        },
      });
      return newId;
    });
    driver.announce(steps);
    return created;
  });
  await driver.stepRollout(id, [], actor);
  return id;
}

/**
 * Applies an operator action to a rollout in one transaction; 404 for an unknown one, 409 when it cannot apply
 * (four eyes: its starter may not approve its wave, unless the plan or the server turned that off).
 */
export async function steerRollout(
  deps: RolloutDeps,
  id: number,
  action: RolloutAction,
  opts: { reason?: string; actor?: string } = {},
): Promise<void> {
  const actor = opts.actor ?? 'admin';
  const event: EngineEvent =
    action === 'abort' || action === 'rollback'
      ? { kind: action, actor, reason: opts.reason }
      : { kind: action, actor };
  await deps.driver.exclusive(async () => {
    const now = deps.clock();
    const out = await inTransaction(deps.store, async (tx) => {
      // Locked on PostgreSQL, so the status the refusal reads is the one the step starts from.
      const ro = await findRollout(tx, id, deps.store.dialect === 'postgres' ? 'for-update' : 'none');
      if (!ro) throw notFound(`no rollout ${id}`);
      // An action that cannot apply says so (409) instead of answering with an unchanged rollout.
      const refused = eventRefusal(ro.status, action);
      if (refused) throw conflict(`rollout ${id}: ${refused}`);
      if (action === 'approve') {
        const fourEyes = waveFourEyesRefusal({
          id,
          wave: ro.plan.waves[ro.state.wave + 1]?.name ?? String(ro.state.wave + 1),
          startedBy: ro.startedBy,
          approver: opts.actor,
          fourEyes: (deps.governance?.fourEyes ?? true) && ro.plan.fourEyes !== false,
        });
        if (fourEyes) throw conflict(fourEyes);
      }
      return deps.driver.within(tx, id, [event], actor, now);
    });
    deps.driver.announce([{ id, out }]);
  });
}

/**
 * Kill switch: pauses every rollout the engine can pause, in one transaction, audited with its reason (400
 * without one); returns their ids.
 */
export async function stopAll(
  deps: RolloutDeps,
  opts: { actor?: string; reason?: string } = {},
): Promise<number[]> {
  const noReason = reasonRefusal('stop-all', opts.reason);
  if (noReason) throw badRequest(noReason);
  const actor = opts.actor ?? 'admin';
  return deps.driver.exclusive(async () => {
    const now = deps.clock();
    const steps: StepsWithin = [];
    await inTransaction(deps.store, async (tx) => {
      steps.length = 0; // run again after a deadlock: only the last attempt's steps count
      for (const id of await rolloutIdsIn(tx, PAUSABLE))
        steps.push({
          id,
          out: await deps.driver.within(
            tx,
            id,
            [{ kind: 'pause', actor: `${actor} (stop-all)` }],
            actor,
            now,
          ),
        });
      await appendAudit(tx, {
        at: now,
        actor,
        action: 'rollout.stop-all',
        subject: 'rollouts',
        detail: { reason: opts.reason, paused: steps.map((s) => s.id) },
      });
    });
    deps.driver.announce(steps);
    return steps.map((s) => s.id);
  });
}
