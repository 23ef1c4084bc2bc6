// One engine step inside a caller's transaction: load the rollout, its assignments and its fleet, run the pure
// `step()`, and persist the new state, the changed assignments, the device commands and audit entries. The
// driver wraps it in a transaction of its own; services (supersede) call it inside the transaction of a larger
// operation, so that the whole operation commits or nothing does.
//
// At scale a step reads what changed, not the fleet: the assignments come from the process's kept copy
// (assignment-cache.ts) plus the rows written since, and the device views only for the devices the step will
// look at (engine/fleet-need.ts); a step that needs more (a wave starts) throws FleetNeeded and runs again
// with every device, which gives the same result.
import { fleetNeedIds } from '../../engine/fleet-need.ts';
import {
  type Command,
  type DeviceView,
  type EngineEvent,
  FleetNeeded,
  type StepInput,
  type StepOutput,
  step,
} from '../../engine/rollout.ts';
import { saveAssignments } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { clearDesiredMany, setDesiredMany } from '../db/desired.ts';
import { findRollout, nextAssignmentRev, saveRolloutState } from '../db/rollouts.ts';
import { notFound } from '../errors.ts';
import type { AssignmentCache, CacheRead } from './assignment-cache.ts';
import { deviceViews } from './rollout-fleet.ts';
import { enqueueTransitions } from './webhooks.ts';

/** Devices a partial step may load by id; past this the whole fleet is read in one pass (cheaper per row). */
const PARTIAL_MAX = 20_000;

/** What a step needs besides the transaction. */
export interface StepRequest {
  id: number;
  events: EngineEvent[];
  actor: string;
  now: number;
  /** Take the rollout's row lock first (PostgreSQL: steps on other replicas wait). */
  lock: boolean;
  /** The process's kept assignments (the driver's); its `committed` must be called once the step commits. */
  cache: AssignmentCache;
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
  /** How the assignments were read: the kept copy as it was, plus rows written since, or every row. */
  read: CacheRead;
  /** The device views read: only those the step looks at, or (after FleetNeeded, or at once) the whole fleet. */
  fleet: 'partial' | 'whole' | 'partial-then-whole';
}

const TIMINGS_KEPT = 200;
const timings: StepTiming[] = [];

/** The last steps' timings in this process (at most 200), oldest first: for benchmarks and diagnosis. */
export function recentStepTimings(): readonly StepTiming[] {
  return timings;
}

/**
 * Runs one step of a rollout in `tx` and persists it there; returns the step's output. Reads what changed since
 * this process's last step of it and the devices the step looks at (see the top of this file).
 */
export async function stepWithin(tx: Db, req: StepRequest): Promise<StepOutput> {
  const t0 = performance.now();
  const ro = await findRollout(tx, req.id, req.lock ? 'for-update' : 'none');
  if (!ro) throw notFound(`no rollout ${req.id}`);
  const kept = await req.cache.read(tx, ro.id, ro.createdAt, ro.asgRev);
  const scope = { component: ro.component, rolloutId: ro.id, channel: ro.channel };
  const input: StepInput = {
    plan: ro.plan,
    rollout: ro.state,
    assignments: kept.assignments,
    index: kept.index,
    devices: [],
    events: req.events,
    now: req.now,
  };
  // A wave of a million queued devices is not collected into a set only to be read whole anyway.
  const need = fleetNeedIds(ro.plan, ro.state, kept.index, PARTIAL_MAX);
  let fleet: StepTiming['fleet'] = 'whole';
  let devices: DeviceView[] | null = null;
  let out: StepOutput | null = null;
  let stepMs = 0;
  if (need) {
    fleet = 'partial';
    devices = need.size === 0 ? [] : await deviceViews(tx, scope, [...need]);
    const s0 = performance.now();
    try {
      out = step({ ...input, devices, partial: true });
    } catch (e) {
      if (!(e instanceof FleetNeeded)) throw e;
      fleet = 'partial-then-whole';
    }
    stepMs += performance.now() - s0;
  }
  if (!out) {
    devices = await deviceViews(tx, scope);
    const s0 = performance.now();
    out = step({ ...input, devices });
    stepMs += performance.now() - s0;
  }
  const t2 = performance.now();
  await saveRolloutState(tx, ro.id, out.rollout, out.wakeAt, req.now);
  let rev = ro.asgRev;
  if (out.changed.length > 0) {
    rev = await nextAssignmentRev(tx, ro.id, false);
    await saveAssignments(tx, ro.id, out.changed, rev);
  }
  req.cache.wrote(ro.id, ro.asgRev, rev, out.changed);
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
  // Webhook events commit with the step or not at all: a crash before delivery loses none (webhooks.ts).
  if (out.transitions.length > 0) await enqueueTransitions(tx, ro, out.transitions);
  timings.push({
    rolloutId: ro.id,
    at: req.now,
    loadMs: t2 - t0 - stepMs,
    stepMs,
    saveMs: performance.now() - t2,
    assignments: kept.assignments.size,
    devices: devices?.length ?? 0,
    changed: out.changed.length,
    commands: out.commands.length,
    read: kept.how,
    fleet,
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
