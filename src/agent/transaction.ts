// The transaction state machine as pure functions over the journal: what to apply, each legal edge, and how to
// recover. Every edge names the phases it may start from and throws (naming both phases) from any other, so the
// order below lives here and not in the runner:
//   (none) ─begin→ downloading ─staged→ staged ─activating→ activating ─probation→ probation ─commit→ committed
//   downloading | staged ─discard→ (none)                     (nothing was switched: drop it, the old release runs)
//   activating | probation ─activating→ activating            (recovery after a crash switches in again)
//   any open phase ─fail→ same phase with its failure recorded; then ─rollingBack→ rolling-back ─rolledBack→
//   rolled-back;   committed | rolled-back ─close→ (none)      (after the report is queued)
import type { ComponentJournal, FailureClass, Phase, Transaction } from './journal.ts';

/** A journal with a transaction in progress: the type every edge after `begin` works on. */
export type OpenJournal = ComponentJournal & { txn: Transaction };

export type Decision = { apply: true; version: string } | { apply: false; why: string };

/** Decides whether a version the server (or a bundle) offers should be applied now. Local controls win. */
export function decide(j: ComponentJournal, offered: string | null): Decision {
  const target = j.pin ?? offered;
  if (target === null) return { apply: false, why: 'nothing offered' };
  if (j.txn) return { apply: false, why: `transaction ${j.txn.id} in progress` };
  if (target === j.current) return { apply: false, why: 'already running' };
  if (j.hold) return { apply: false, why: 'held on the device' };
  if (j.pin && offered !== null && offered !== j.pin)
    return { apply: false, why: `pinned to ${j.pin} on the device` };
  if (j.quarantined.includes(target)) return { apply: false, why: `${target} is quarantined on this device` };
  return { apply: true, version: target };
}

/** True when the journal holds a transaction in progress. */
export function isOpen(j: ComponentJournal): j is OpenJournal {
  return j.txn !== null;
}

/** The phases each edge may start from. */
export const LEGAL_SOURCES = {
  staged: ['downloading'],
  activating: ['staged', 'activating', 'probation'],
  probation: ['activating'],
  commit: ['probation'],
  fail: ['downloading', 'staged', 'activating', 'probation', 'rolling-back'],
  rollingBack: ['downloading', 'staged', 'activating', 'probation', 'rolling-back'],
  rolledBack: ['rolling-back'],
  discard: ['downloading', 'staged'],
  close: ['committed', 'rolled-back'],
} as const satisfies Record<string, readonly Phase[]>;

export type Edge = keyof typeof LEGAL_SOURCES;

/** Throws unless the journal's transaction is in a phase `edge` may start from. */
function from(j: ComponentJournal, edge: Edge): Transaction {
  const t = j.txn;
  if (!t) throw new Error(`${edge}: no transaction in progress for ${j.component}`);
  const legal: readonly Phase[] = LEGAL_SOURCES[edge];
  if (!legal.includes(t.phase))
    throw new Error(`${edge}: illegal from phase ${t.phase} (legal from ${legal.join(', ')})`);
  return t;
}

/** Returns the journal with its transaction moved to `phase`. */
function to(j: ComponentJournal, t: Transaction, phase: Phase): OpenJournal {
  return { ...j, txn: { ...t, phase } };
}

/** (none) → downloading: opens a transaction from the current release to `version`. */
export function begin(
  j: ComponentJournal,
  id: string,
  version: string,
  now: number,
  offline = false,
): OpenJournal {
  if (j.txn) throw new Error(`begin: illegal from phase ${j.txn.phase} (transaction ${j.txn.id} is open)`);
  const txn: Transaction = {
    id,
    version,
    from: j.current,
    phase: 'downloading',
    attempts: 0,
    startedAt: now,
    failure: null,
    ...(offline ? { offline: true } : {}),
  };
  return { ...j, txn };
}

/**
 * (none) → probation with an operator failure: models taking the current release out (`agent rollback` with no
 * transaction open) as a failed transaction from `previous` to `current`, so `rollingBack` undoes it.
 */
export function beginUndo(j: ComponentJournal, id: string, now: number, reason: string): OpenJournal {
  if (j.txn)
    throw new Error(`beginUndo: illegal from phase ${j.txn.phase} (transaction ${j.txn.id} is open)`);
  if (!j.current || !j.previous) throw new Error(`${j.component}: no previous release to roll back to`);
  const txn: Transaction = {
    id,
    version: j.current,
    from: j.previous,
    phase: 'probation',
    attempts: 0,
    startedAt: now,
    failure: { class: 'operator', reason },
  };
  return { ...j, current: j.previous, previous: null, txn };
}

/** downloading → staged: every artifact is verified and staged beside the running release. */
export function staged(j: ComponentJournal): OpenJournal {
  return to(j, from(j, 'staged'), 'staged');
}

/** staged → activating (or again from activating/probation when recovery switches in after a crash). */
export function activating(j: ComponentJournal): OpenJournal {
  return to(j, from(j, 'activating'), 'activating');
}

/** activating → probation: switched in; health is judged next. */
export function probation(j: ComponentJournal): OpenJournal {
  return to(j, from(j, 'probation'), 'probation');
}

/** probation → committed, the commit point's bookkeeping: the new release becomes current, the old one previous. */
export function commit(j: ComponentJournal): OpenJournal {
  const t = from(j, 'commit');
  return { ...j, current: t.version, previous: t.from, txn: { ...t, phase: 'committed' } };
}

/** Records why the transaction failed (the phase is kept; `rollingBack` follows). */
export function fail(j: ComponentJournal, cls: FailureClass, reason: string): OpenJournal {
  const t = from(j, 'fail');
  return { ...j, txn: { ...t, failure: { class: cls, reason } } };
}

/** → rolling-back: only after a failure was recorded, so a crash from here on recovers into the rollback. */
export function rollingBack(j: ComponentJournal): OpenJournal {
  const t = from(j, 'rollingBack');
  if (!t.failure) throw new Error(`rollingBack: no failure recorded in phase ${t.phase}`);
  return to(j, t, 'rolling-back');
}

/** rolling-back → rolled-back; the release is quarantined so the agent never re-applies it on its own. */
export function rolledBack(j: ComponentJournal): OpenJournal {
  const t = from(j, 'rolledBack');
  const q = j.quarantined.includes(t.version) ? j.quarantined : [...j.quarantined, t.version];
  return { ...j, quarantined: q, txn: { ...t, phase: 'rolled-back' } };
}

/** downloading | staged → (none): nothing was switched, the running release was never touched. */
export function discard(j: ComponentJournal): ComponentJournal {
  from(j, 'discard');
  return { ...j, txn: null };
}

/** committed | rolled-back → (none): the report is queued, the transaction is over. */
export function close(j: ComponentJournal): ComponentJournal {
  from(j, 'close');
  return { ...j, txn: null };
}

export type Recovery =
  | { kind: 'none' }
  | { kind: 'discard' } // nothing was switched yet: drop the staging and start clean
  | { kind: 'probation' } // switched, attempts left: check health again
  | { kind: 'rollback'; class: FailureClass; reason: string }
  | { kind: 'report' }; // finished, but the report may not have been queued

/**
 * What to do with a journal found when the agent (or the boot guard) starts. Each start while the new
 * release is switched in counts one attempt; past maxAttempts the release is rolled back before the
 * service gets another chance to crash the machine.
 */
export function recover(
  j: ComponentJournal,
  maxAttempts: number,
  by: 'agent' | 'guard' = 'agent',
): { journal: ComponentJournal; action: Recovery } {
  const t = j.txn;
  if (!t) return { journal: j, action: { kind: 'none' } };
  switch (t.phase) {
    case 'downloading':
    case 'staged':
      return { journal: j, action: { kind: 'discard' } };
    case 'activating':
    case 'probation': {
      // The boot guard and the agent start in the same boot: the guard's count stands for both.
      if (by === 'agent' && t.guardCounted) {
        const journal = { ...j, txn: { ...t, guardCounted: false } };
        if (t.failure) return { journal, action: { kind: 'rollback', ...t.failure } };
        return { journal, action: { kind: 'probation' } };
      }
      const attempts = t.attempts + 1;
      const journal = { ...j, txn: { ...t, attempts, guardCounted: by === 'guard' } };
      if (t.failure) return { journal, action: { kind: 'rollback', ...t.failure } };
      if (attempts >= maxAttempts) {
        return {
          journal,
          action: {
            kind: 'rollback',
            class: 'crash-loop',
            reason: `interrupted ${attempts} times while ${t.phase} (max_attempts ${maxAttempts})`,
          },
        };
      }
      return { journal, action: { kind: 'probation' } };
    }
    case 'rolling-back':
      return {
        journal: j,
        action: {
          kind: 'rollback',
          class: t.failure?.class ?? 'crash-loop',
          reason: t.failure?.reason ?? 'rollback interrupted',
        },
      };
    case 'committed':
    case 'rolled-back':
      return { journal: j, action: { kind: 'report' } };
  }
}
