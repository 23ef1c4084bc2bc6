// The rules that decide whether a rollout may start, as pure functions over what the database said: the
// service loads the facts, these decide, and the unit tests call them directly.
import { ACTIVE, eventRefusal, type RolloutStatus } from '../../engine/rollout-state.ts';
import type { Channel } from '../db/rollouts.ts';

/**
 * The statuses stop-all pauses: the active ones the engine itself accepts a pause in (its own definition,
 * `eventRefusal`, not a copy of it).
 */
export const PAUSABLE: ReadonlySet<RolloutStatus> = new Set(
  [...ACTIVE].filter((s) => eventRefusal(s, 'pause') === null),
);

/** Only an approved release is rolled out: why this one cannot be, or null. */
export function approvalRefusal(ref: string, approvedAt: number | null): string | null {
  return approvedAt === null ? `release ${ref} is not approved (ringfence release approve ${ref})` : null;
}

/**
 * The promotion gate: the general channel gets a release only after it completed on the early channel, unless
 * the operator forces it (audited). Why it refuses, or null.
 */
export function promotionRefusal(p: {
  ref: string;
  channel: Channel | null;
  completedOnEarly: boolean;
  force: boolean;
}): string | null {
  if (p.channel !== 'general' || p.completedOnEarly || p.force) return null;
  return `${p.ref} has not completed on the early channel; promote it there first or pass force (audited)`;
}

/**
 * One active rollout per component (a component on a device is never in two rollouts at once): why a new one
 * cannot start while `active` are, or null.
 */
export function activeRolloutRefusal(
  component: string,
  active: ReadonlyArray<{ id: number; version: string }>,
): string | null {
  const clash = active[0];
  if (!clash) return null;
  return `rollout ${clash.id} of ${component}@${clash.version} is still active; finish or abort it, or pass --supersede`;
}

/** The reason recorded on a rollout aborted because a newer one superseded it. */
export function supersedeReason(ref: string, reason: string | undefined): string {
  return `superseded by ${ref}${reason ? `: ${reason}` : ''}`;
}
