// The transaction state machine as pure functions over the journal: what to apply, and how to recover.
//   idle → downloading → staged → activating (atomic switch) → probation → committed
//                                     └──────────── any failure ───────────→ rolling-back → rolled-back
import type { ComponentJournal, FailureClass, Transaction } from './journal.ts';

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

export function begin(j: ComponentJournal, id: string, version: string, now: number): ComponentJournal {
  const txn: Transaction = {
    id,
    version,
    from: j.current,
    phase: 'downloading',
    attempts: 0,
    startedAt: now,
    failure: null,
  };
  return { ...j, txn };
}

export function advance(j: ComponentJournal, phase: Transaction['phase']): ComponentJournal {
  if (!j.txn) throw new Error('no transaction');
  return { ...j, txn: { ...j.txn, phase } };
}

export function fail(j: ComponentJournal, cls: FailureClass, reason: string): ComponentJournal {
  if (!j.txn) throw new Error('no transaction');
  return { ...j, txn: { ...j.txn, failure: { class: cls, reason } } };
}

/** The commit point's bookkeeping: the new release becomes current, the old one previous. */
export function commit(j: ComponentJournal): ComponentJournal {
  if (!j.txn) throw new Error('no transaction');
  return { ...j, current: j.txn.version, previous: j.txn.from, txn: { ...j.txn, phase: 'committed' } };
}

/** After a rollback the release is quarantined so the agent never re-applies it on its own. */
export function rolledBack(j: ComponentJournal): ComponentJournal {
  if (!j.txn) throw new Error('no transaction');
  const q = j.quarantined.includes(j.txn.version) ? j.quarantined : [...j.quarantined, j.txn.version];
  return { ...j, quarantined: q, txn: { ...j.txn, phase: 'rolled-back' } };
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
