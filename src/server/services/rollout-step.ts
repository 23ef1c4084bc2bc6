// One engine step inside a caller's transaction: load the rollout, its assignments and its fleet, run the pure
// `step()`, and persist the new state, the changed assignments, the device commands and audit entries. The
// driver wraps it in a transaction of its own; services (supersede) call it inside the transaction of a larger
// operation, so that the whole operation commits or nothing does.
import { type Command, type EngineEvent, type StepOutput, step } from '../../engine/rollout.ts';
import { loadAssignments, saveAssignments } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { clearDesiredMany, setDesiredMany } from '../db/desired.ts';
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

/** Where one server step spent its time (ms): loading, the pure step, persisting; and what it changed. */
export interface StepTiming {
  rolloutId: number;
  at: number;
  loadMs: number;
  stepMs: number;
  saveMs: number;
  assignments: number;
  devices: number;
  changed: number;
  commands: number;
}

const TIMINGS_KEPT = 200;
const timings: StepTiming[] = [];

/** The last steps' timings in this process (at most 200), oldest first: for benchmarks and diagnosis. */
export function recentStepTimings(): readonly StepTiming[] {
  return timings;
}

/**
 * Runs one step of a rollout in `tx` and persists it there; returns the step's output. It reads every assignment
 * and device view of the rollout (O(fleet) per step: at 1 M devices the reads, not the engine, dominate a step).
 */
export async function stepWithin(tx: Db, req: StepRequest): Promise<StepOutput> {
  const t0 = performance.now();
  const ro = await findRollout(tx, req.id, req.lock ? 'for-update' : 'none');
  if (!ro) throw notFound(`no rollout ${req.id}`);
  const [assignments, devices] = await Promise.all([
    loadAssignments(tx, ro.id),
    deviceViews(tx, { component: ro.component, rolloutId: ro.id, channel: ro.channel }),
  ]);
  const t1 = performance.now();
  const out = step({
    plan: ro.plan,
    rollout: ro.state,
    assignments,
    devices,
    events: req.events,
    now: req.now,
  });
  const t2 = performance.now();
  await saveRolloutState(tx, ro.id, out.rollout, out.wakeAt, req.now);
  await saveAssignments(tx, ro.id, out.changed);
  await applyCommands(tx, ro.id, out.commands, req.now);
  for (const t of out.transitions) {
    await appendAudit(tx, {
      at: t.at,
      actor: req.actor,
      action: `rollout.${t.to}`,
      subject: `rollout/${ro.id}`,
      detail: { from: t.from, to: t.to, wave: t.wave, why: t.why },
    });
  }
  timings.push({
    rolloutId: ro.id,
    at: req.now,
    loadMs: t1 - t0,
    stepMs: t2 - t1,
    saveMs: performance.now() - t2,
    assignments: assignments.size,
    devices: devices.length,
    changed: out.changed.length,
    commands: out.commands.length,
  });
  if (timings.length > TIMINGS_KEPT) timings.shift();
  return out;
}

/**
 * Writes the engine's commands to `desired` (what the device should run): an offer or a revert to a version sets
 * it, a withdrawal or a revert to nothing clears it. Consecutive commands of one kind go in batches (a wave start
 * offers ~1 M devices); the order between a set and a clear of one device is kept.
 */
async function applyCommands(tx: Db, rolloutId: number, commands: Command[], now: number): Promise<void> {
  type Row = { deviceId: string; component: string; version: string; rolloutId: number; now: number };
  let sets: Row[] = [];
  let clears: { component: string; ids: string[] } | null = null;
  const flush = async () => {
    if (sets.length > 0) await setDesiredMany(tx, sets);
    if (clears) await clearDesiredMany(tx, clears.ids, clears.component);
    sets = [];
    clears = null;
  };
  for (const c of commands) {
    const version = c.kind === 'offer' || c.kind === 'revert' ? c.version : null;
    if (version !== null) {
      if (clears) await flush();
      sets.push({ deviceId: c.deviceId, component: c.component, version, rolloutId, now });
    } else {
      if (sets.length > 0 || (clears && clears.component !== c.component)) await flush();
      clears ??= { component: c.component, ids: [] };
      clears.ids.push(c.deviceId);
    }
  }
  await flush();
}
