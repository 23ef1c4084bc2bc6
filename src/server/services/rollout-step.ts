// One engine step inside a caller's transaction: load the rollout, its assignments and its fleet, run the pure
// `step()`, and persist the new state, the changed assignments, the device commands and audit entries. The
// driver wraps it in a transaction of its own; services (supersede) call it inside the transaction of a larger
// operation, so that the whole operation commits or nothing does.
import { type Command, type EngineEvent, type StepOutput, step } from '../../engine/rollout.ts';
import { loadAssignments, saveAssignments } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { clearDesired, setDesired } from '../db/desired.ts';
import { findRollout, saveRolloutState } from '../db/rollouts.ts';
import { notFound } from '../errors.ts';
import { deviceViews } from './rollout-fleet.ts';

/** What a step needs besides the transaction. */
export interface StepRequest {
  id: number;
  events: EngineEvent[];
  actor: string;
  now: number;
  /** Take the rollout's row lock first (PostgreSQL: steps on other replicas wait). */
  lock: boolean;
}

/** Runs one step of a rollout in `tx` and persists it there; returns the step's output. */
export async function stepWithin(tx: Db, req: StepRequest): Promise<StepOutput> {
  const ro = await findRollout(tx, req.id, req.lock ? 'for-update' : 'none');
  if (!ro) throw notFound(`no rollout ${req.id}`);
  const [assignments, devices] = await Promise.all([
    loadAssignments(tx, ro.id),
    deviceViews(tx, { component: ro.component, rolloutId: ro.id, channel: ro.channel }),
  ]);
  const out = step({
    plan: ro.plan,
    rollout: ro.state,
    assignments,
    devices,
    events: req.events,
    now: req.now,
  });
  await saveRolloutState(tx, ro.id, out.rollout, out.wakeAt, req.now);
  await saveAssignments(tx, ro.id, out.changed);
  for (const c of out.commands) await applyCommand(tx, ro.id, c, req.now);
  for (const t of out.transitions) {
    await appendAudit(tx, {
      at: t.at,
      actor: req.actor,
      action: `rollout.${t.to}`,
      subject: `rollout/${ro.id}`,
      detail: { from: t.from, to: t.to, wave: t.wave, why: t.why },
    });
  }
  return out;
}

/**
 * Writes one engine command to `desired` (what the device should run): an offer or a revert to a version sets
 * it, a withdrawal or a revert to nothing clears it.
 */
async function applyCommand(tx: Db, rolloutId: number, c: Command, now: number): Promise<void> {
  const version = c.kind === 'offer' || c.kind === 'revert' ? c.version : null;
  if (version !== null)
    await setDesired(tx, { deviceId: c.deviceId, component: c.component, version, rolloutId, now });
  else await clearDesired(tx, c.deviceId, c.component);
}
