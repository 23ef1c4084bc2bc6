// Plans: apply (validated, checked against the live fleet, audited) and list.
import { analysePlan } from '../../engine/exposure.ts';
import { type Plan, PlanError, parsePlan } from '../../engine/plan.ts';
import type { PrometheusOptions } from '../config.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { listPlans, type StoredPlan, savePlan } from '../db/plans.ts';
import type { Channel } from '../db/rollouts.ts';
import { badRequest, conflict, forbidden } from '../errors.ts';
import { metricGatesRefusal } from './metric-gates.ts';
import { liveFleetLabels } from './rollout-fleet.ts';
import { reasonRefusal } from './rollout-rules.ts';

/** What a plan is applied with. */
export interface PlanInput {
  source: string;
  file?: string;
  allowWide?: boolean;
  /** Why: required with `allowWide` (recorded in the audit entry). */
  reason?: string;
  /**
   * The caller may apply a plan with `four_eyes: false` (role admin): turning the second pair of eyes off for
   * every rollout of a plan is not something the person it restrains may decide alone. Unset: refused (403).
   */
  mayTurnOffFourEyes?: boolean;
  /** Where metric gates are evaluated (server.yaml `prometheus:`); a plan with gates and none is refused. */
  prometheus?: PrometheusOptions | null;
}

/**
 * Refuses (409) a plan whose first wave is over its cap against the live fleet (for a rollout: the devices of
 * its channel that run its component; `null`: every device), unless allowed (the caller audits that).
 */
export async function refuseWide(
  db: Db,
  plan: Plan,
  target: { component: string; channel: Channel | null } | null,
  allowWide: boolean,
): Promise<void> {
  const a = analysePlan(plan, await liveFleetLabels(db, target), { allowWide });
  if (a.problems.length) throw conflict(a.problems.join('; '));
}

/**
 * Validates a plan's YAML (400 naming line and field), checks it and stores it, audited, in one transaction.
 * `allowWide` needs a reason (400 without one).
 */
export async function applyPlan(db: Db, input: PlanInput, now: number, actor = 'admin'): Promise<Plan> {
  const allowWide = input.allowWide === true;
  const noReason = allowWide ? reasonRefusal('allow-wide', input.reason) : null;
  if (noReason) throw badRequest(noReason);
  let plan: Plan;
  try {
    plan = parsePlan(input.source, input.file ?? 'plan.yaml');
  } catch (e) {
    if (e instanceof PlanError) throw badRequest(e.message);
    throw e;
  }
  const noProm = metricGatesRefusal(plan, input.prometheus ?? null);
  if (noProm) throw badRequest(noProm);
  if (plan.fourEyes === false && input.mayTurnOffFourEyes !== true)
    throw forbidden(`plan ${plan.name} sets four_eyes: false, which needs role admin`);
  await db.transaction().execute(async (tx) => {
    await refuseWide(tx, plan, null, allowWide);
    await savePlan(tx, plan, input.source, now);
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'plan.applied',
      subject: `plan/${plan.name}`,
      detail: { ...plan, allow_wide: allowWide, ...(input.reason ? { reason: input.reason } : {}) },
    });
  });
  return plan;
}

/** Every plan as applied, with when. */
export async function plansWithTimes(db: Db): Promise<Array<Plan & { updated_at: number }>> {
  return (await listPlans(db)).map((p: StoredPlan) => ({ ...p.plan, updated_at: p.updatedAt }));
}
