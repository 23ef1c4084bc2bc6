// The agent's transaction state machine on its own: every legal edge, every illegal source phase rejected, and a
// property that any sequence of edge calls either follows the legal order or throws and leaves the journal as it was.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { ComponentJournal, Phase } from '../src/agent/journal.ts';
import {
  activating,
  begin,
  beginUndo,
  close,
  commit,
  discard,
  fail,
  probation,
  rolledBack,
  rollingBack,
  staged,
} from '../src/agent/transaction.ts';

const PHASES: Phase[] = [
  'downloading',
  'staged',
  'activating',
  'probation',
  'committed',
  'rolling-back',
  'rolled-back',
];

type Edge =
  | 'begin'
  | 'staged'
  | 'activating'
  | 'probation'
  | 'commit'
  | 'fail'
  | 'rollingBack'
  | 'rolledBack'
  | 'discard'
  | 'close';

// The machine written out independently of transaction.ts: source phase (null: no transaction) → phase after.
// `fail` keeps the phase; `rollingBack` also needs a recorded failure.
const EXPECTED: Record<Edge, Partial<Record<Phase | 'none', Phase | null>>> = {
  begin: { none: 'downloading' },
  staged: { downloading: 'staged' },
  activating: { staged: 'activating', activating: 'activating', probation: 'activating' },
  probation: { activating: 'probation' },
  commit: { probation: 'committed' },
  fail: {
    downloading: 'downloading',
    staged: 'staged',
    activating: 'activating',
    probation: 'probation',
    'rolling-back': 'rolling-back',
  },
  rollingBack: {
    downloading: 'rolling-back',
    staged: 'rolling-back',
    activating: 'rolling-back',
    probation: 'rolling-back',
    'rolling-back': 'rolling-back',
  },
  rolledBack: { 'rolling-back': 'rolled-back' },
  discard: { downloading: null, staged: null },
  close: { committed: null, 'rolled-back': null },
};
const EDGES = Object.keys(EXPECTED) as Edge[];

function closed(): ComponentJournal {
  return {
    component: 'app',
    current: '1.0.0',
    previous: '0.9.0',
    quarantined: [],
    hold: false,
    pin: null,
    txn: null,
    lastHealth: null,
  };
}

function inPhase(phase: Phase, failed = false): ComponentJournal {
  const j = begin(closed(), 'txn-1', '2.0.0', 1000);
  return { ...j, txn: { ...j.txn, phase, failure: failed ? { class: 'health', reason: 'bad' } : null } };
}

/** Applies one edge by name (the fixed arguments are enough: the edges' checks depend only on the phase). */
function call(edge: Edge, j: ComponentJournal): ComponentJournal {
  switch (edge) {
    case 'begin':
      return begin(j, 'txn-2', '3.0.0', 2000);
    case 'staged':
      return staged(j);
    case 'activating':
      return activating(j);
    case 'probation':
      return probation(j);
    case 'commit':
      return commit(j);
    case 'fail':
      return fail(j, 'health', 'check failed');
    case 'rollingBack':
      return rollingBack(j);
    case 'rolledBack':
      return rolledBack(j);
    case 'discard':
      return discard(j);
    case 'close':
      return close(j);
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

describe('transaction edges', () => {
  for (const edge of EDGES) {
    for (const source of ['none', ...PHASES] as const) {
      const expected = EXPECTED[edge][source];
      const legal = expected !== undefined;
      test(`${edge} from ${source} is ${legal ? 'legal' : 'rejected'}`, () => {
        const j = deepFreeze(source === 'none' ? closed() : inPhase(source, true));
        if (legal) {
          const next = call(edge, j);
          assert.equal(next.txn?.phase ?? null, expected);
        } else {
          assert.throws(
            () => call(edge, j),
            (e: Error) =>
              e.message.startsWith(`${edge}:`) && (source === 'none' || e.message.includes(source)),
          );
        }
      });
    }
  }

  test('rollingBack needs a recorded failure', () => {
    assert.throws(
      () => rollingBack(inPhase('probation')),
      /rollingBack: no failure recorded in phase probation/,
    );
  });

  test('commit makes the new release current and the old one previous', () => {
    const j = commit(inPhase('probation'));
    assert.equal(j.current, '2.0.0');
    assert.equal(j.previous, '1.0.0');
    assert.equal(j.txn.phase, 'committed');
  });

  test('rolledBack quarantines the release once and leaves current alone', () => {
    const j = rolledBack(rollingBack(fail(inPhase('probation'), 'health', 'down')));
    assert.deepEqual(j.quarantined, ['2.0.0']);
    assert.equal(j.current, '1.0.0');
    assert.deepEqual(j.txn.failure, { class: 'health', reason: 'down' });
    const again = rolledBack({ ...j, txn: { ...j.txn, phase: 'rolling-back' } });
    assert.deepEqual(again.quarantined, ['2.0.0']);
  });

  test('begin records the offline flag and where it came from', () => {
    const j = begin(closed(), 'txn-9', '2.0.0', 5, true);
    assert.deepEqual(j.txn, {
      id: 'txn-9',
      version: '2.0.0',
      from: '1.0.0',
      phase: 'downloading',
      attempts: 0,
      startedAt: 5,
      failure: null,
      offline: true,
    });
  });

  test('beginUndo models taking the current release out as a failed transaction from previous', () => {
    const j = beginUndo(closed(), 'txn-u', 7, 'operator said so');
    assert.equal(j.current, '0.9.0');
    assert.equal(j.previous, null);
    assert.equal(j.txn.version, '1.0.0');
    assert.equal(j.txn.from, '0.9.0');
    assert.equal(j.txn.phase, 'probation');
    assert.deepEqual(j.txn.failure, { class: 'operator', reason: 'operator said so' });
    assert.equal(rollingBack(j).txn.phase, 'rolling-back');
    assert.throws(() => beginUndo(inPhase('staged'), 'x', 1, 'r'), /beginUndo: illegal from phase staged/);
    assert.throws(() => beginUndo({ ...closed(), previous: null }, 'x', 1, 'r'), /no previous release/);
  });

  test('property: any sequence of edges follows the legal order or throws without changing the journal', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...EDGES), { maxLength: 40 }), (edges) => {
        let j = deepFreeze(closed());
        for (const edge of edges) {
          const source = j.txn?.phase ?? 'none';
          let expected = EXPECTED[edge][source];
          if (edge === 'rollingBack' && !j.txn?.failure) expected = undefined;
          const before = structuredClone(j);
          let next: ComponentJournal | undefined;
          try {
            next = call(edge, j);
          } catch {
            next = undefined;
          }
          assert.deepEqual(j, before, `${edge} changed the journal it was given`);
          if (expected === undefined) {
            assert.equal(next, undefined, `${edge} from ${source} should have thrown`);
            continue;
          }
          assert.ok(next, `${edge} from ${source} should be legal`);
          assert.equal(next.txn?.phase ?? null, expected);
          j = deepFreeze(next);
        }
      }),
      { numRuns: 500 },
    );
  });
});
