// Reboot coordination (FleetLock, issue 14): the pure decisions about a device's reboot slot. A component marked
// `reboot: true` activates only while the device holds a slot of its group's semaphore; the slot is journaled
// (per component) before it is asked for and until it is given back, so a crash never loses track of it. The
// HTTP side is fleet-lock-client.ts; the runner wires the two together. Times are passed in (`now`).
import type { ComponentJournal, Phase } from './journal.ts';
import { backoff } from './retry.ts';

/** The slot a component's transaction asked for or holds; kept after the transaction closes until released. */
export interface SlotRecord {
  group: string;
  /** `acquiring`: journaled before pre-reboot is sent (a crash then may or may not hold it: release it). */
  state: 'acquiring' | 'held';
  txn: string;
  at: number;
}

/** A staged transaction waiting for a slot: when to ask again, and why the last ask failed. */
export interface SlotWait {
  since: number;
  attempts: number;
  next_at: number;
  reason: string;
}

/** The group a device belongs to: the value of its `group_label` label, else "default". */
export function lockGroup(labels: Record<string, string>, groupLabel: string): string {
  const v = labels[groupLabel];
  return v && v.length > 0 ? v : 'default';
}

/** Phases a crash may leave a transaction in that recovery activates again (so only with a live slot). */
const SWITCHING: readonly Phase[] = ['activating', 'probation'];

/**
 * `pre-reboot` is about to be sent: journaled first, so a crash during the request still gets released. Asked
 * when staged, and again by recovery before it re-runs activation after a crash (the old grant's lease may
 * have run out and the slot gone to another device).
 */
export function asking(j: ComponentJournal, group: string, now: number): ComponentJournal {
  if (!j.txn || (j.txn.phase !== 'staged' && !SWITCHING.includes(j.txn.phase)))
    throw new Error(`asking for a slot: ${j.component} is not staged`);
  return { ...j, slot: { group, state: 'acquiring', txn: j.txn.id, at: now } };
}

/** The server granted the slot: the transaction may activate now. */
export function granted(j: ComponentJournal, now: number): ComponentJournal {
  if (!j.slot || !j.txn || j.slot.txn !== j.txn.id)
    throw new Error(`granted: ${j.component} asked for no slot`);
  return { ...j, slot: { ...j.slot, state: 'held', at: now }, slotWait: null };
}

/**
 * The server refused (no slot free) or could not be reached: the transaction stays staged and asks again at a
 * check-in after an exponential backoff (the retry base and max of the agent config).
 */
export function refused(
  j: ComponentJournal,
  reason: string,
  now: number,
  retry: { base: number; max: number },
  random: () => number = Math.random,
): ComponentJournal {
  const attempts = (j.slotWait?.attempts ?? 0) + 1;
  return {
    ...j,
    slot: null, // refused: not held (an unreachable server's lease covers a grant whose answer was lost)
    slotWait: {
      since: j.slotWait?.since ?? now,
      attempts,
      next_at: now + backoff(attempts, retry.base, retry.max, random),
      reason,
    },
  };
}

/** True when the journal's transaction may activate: a reboot component only with its slot held. */
export function mayActivate(j: ComponentJournal, reboot: boolean): boolean {
  if (!reboot) return true;
  return !!j.txn && j.slot?.state === 'held' && j.slot.txn === j.txn.id;
}

export type Resume =
  | { kind: 'none' } // not waiting for a slot
  | { kind: 'wait'; ms: number; why?: string } // backing off, or nothing positively offered: ask again later
  | { kind: 'ask' } // ask for the slot again now
  | { kind: 'discard'; why: string }; // the wanted version changed: drop the staged one

/**
 * What a check-in does with a transaction waiting for a slot, given the version the server positively offers
 * in this answer (null: none, or an erroneous offer). A staged one is dropped only when the local pin, the
 * local hold or a positive offer of another version says so: a check-in whose answer lacks the offer keeps it
 * (a glitch must not cost a download), but never asks for a slot for it either (the server may have
 * withdrawn it: a halted rollout). One recovery left switching (activating/probation, after a crash) cannot
 * be dropped (something may be switched already): it asks again after its backoff.
 */
export function resume(j: ComponentJournal, offered: string | null, now: number): Resume {
  if (!j.txn || !j.slotWait) return { kind: 'none' };
  const wait = Math.max(0, j.slotWait.next_at - now);
  if (SWITCHING.includes(j.txn.phase)) return wait > 0 ? { kind: 'wait', ms: wait } : { kind: 'ask' };
  if (j.txn.phase !== 'staged') return { kind: 'none' };
  if (j.hold) return { kind: 'discard', why: 'held on the device' };
  const wanted = j.pin ?? offered;
  if (wanted === null) return { kind: 'wait', ms: wait, why: 'not offered in this check-in' };
  if (wanted !== j.txn.version)
    return { kind: 'discard', why: `${wanted} is wanted now, not ${j.txn.version}` };
  if (wait > 0) return { kind: 'wait', ms: wait };
  return { kind: 'ask' };
}

/** A slot record still in use: its transaction is between asking and finishing (committed or rolled back). */
function inUse(j: ComponentJournal): boolean {
  if (!j.slot || !j.txn || j.txn.id !== j.slot.txn) return false;
  return j.txn.phase !== 'committed' && j.txn.phase !== 'rolled-back';
}

/**
 * Which slot records can be given back now: those whose transaction finished (closed, committed or rolled
 * back, or discarded by recovery). The device has one slot per group (its id is the device's), so a group is
 * released only when no other component's transaction still uses it.
 */
export function releasable(journals: ComponentJournal[]): Array<{ group: string; components: string[] }> {
  const busy = new Set(journals.filter(inUse).map((j) => j.slot!.group));
  const out = new Map<string, string[]>();
  for (const j of journals) {
    if (!j.slot || inUse(j) || busy.has(j.slot.group)) continue;
    out.set(j.slot.group, [...(out.get(j.slot.group) ?? []), j.component]);
  }
  return [...out].map(([group, components]) => ({ group, components }));
}

/** The slot was given back (steady-state answered 200). */
export function released(j: ComponentJournal): ComponentJournal {
  return { ...j, slot: null };
}

/** What status shows for a component waiting for a slot, or null. */
export function waitingNote(j: ComponentJournal): string | null {
  if (!j.slotWait || !j.txn || (j.txn.phase !== 'staged' && !SWITCHING.includes(j.txn.phase))) return null;
  return `waiting for a reboot slot (asked ${j.slotWait.attempts}×: ${j.slotWait.reason})`;
}
