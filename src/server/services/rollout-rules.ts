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

/** What is waiting for an approval, and the operator name that may not give it (null: anyone may). */
export interface AwaitingApproval {
  what: string;
  by_anyone_but: string | null;
}

/**
 * The operator name of an audit actor: `alice/ci` → `alice`. Four eyes compares names, so a second token of
 * the same person is not a second pair of eyes.
 */
export function operatorName(actor: string): string {
  const slash = actor.indexOf('/');
  return slash < 0 ? actor : actor.slice(0, slash);
}

/** True when `approver` is the same person as `author` (null author: a row from before four eyes, never refused). */
function samePerson(author: string | null, approver: string | undefined): boolean {
  return author !== null && approver !== undefined && operatorName(author) === operatorName(approver);
}

/** Four eyes on a release: why `approver` may not approve release `ref` that `importedBy` imported, or null. */
export function releaseFourEyesRefusal(p: {
  ref: string;
  importedBy: string | null;
  approver: string | undefined;
  fourEyes: boolean;
}): string | null {
  if (!p.fourEyes || !samePerson(p.importedBy, p.approver)) return null;
  return `four eyes: ${operatorName(p.importedBy ?? '')} imported ${p.ref} and may not approve it (another approver must)`;
}

/** Four eyes on an approval wave: why `approver` may not approve wave `wave` of rollout `id`, or null. */
export function waveFourEyesRefusal(p: {
  id: number;
  wave: string;
  startedBy: string | null;
  approver: string | undefined;
  fourEyes: boolean;
}): string | null {
  if (!p.fourEyes || !samePerson(p.startedBy, p.approver)) return null;
  return `four eyes: ${operatorName(p.startedBy ?? '')} started rollout ${p.id} and may not approve its wave "${p.wave}"`;
}

/** A recorded reason for an exceptional action: the refusal when `reason` is missing or blank, else null. */
export function reasonRefusal(what: string, reason: string | undefined): string | null {
  return reason?.trim() ? null : `a reason is required for ${what}`;
}

/** The exceptional parts of a rollout start that each need a reason: the first one without it, or null. */
export function startReasonRefusal(req: {
  emergency?: boolean;
  force?: boolean;
  allowWide?: boolean;
  reason?: string;
}): string | null {
  const what = [
    req.emergency === true ? 'an emergency start' : null,
    req.force === true ? 'forcing the promotion gate' : null,
    req.allowWide === true ? 'allow-wide' : null,
  ].filter((w) => w !== null);
  return what.length ? reasonRefusal(what.join(' and '), req.reason) : null;
}

/** A release waiting for approval (null once approved); four eyes off: anyone may. */
export function releaseAwaiting(
  r: { ref: string; approvedAt: number | null; importedBy: string | null },
  fourEyes: boolean,
): AwaitingApproval | null {
  if (r.approvedAt !== null) return null;
  return {
    what: `release ${r.ref}`,
    by_anyone_but: fourEyes && r.importedBy !== null ? operatorName(r.importedBy) : null,
  };
}

/** A rollout waiting for the approval of its next wave (null otherwise); four eyes off: anyone may. */
export function waveAwaiting(
  r: { id: number; status: RolloutStatus; nextWave: string | null; startedBy: string | null },
  fourEyes: boolean,
): AwaitingApproval | null {
  if (r.status !== 'awaiting-approval' || r.nextWave === null) return null;
  return {
    what: `wave "${r.nextWave}" of rollout ${r.id}`,
    by_anyone_but: fourEyes && r.startedBy !== null ? operatorName(r.startedBy) : null,
  };
}
