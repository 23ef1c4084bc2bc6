// The reboot semaphore's pure rules (services/fleet-lock-rules.ts) under random histories of pre-reboot,
// steady-state and passing time: never more holders than slots, pre-reboot idempotent, expiry frees exactly the
// holders whose lease ended.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  acquire,
  addressList,
  expire,
  type Holder,
  release,
} from '../src/server/services/fleet-lock-rules.ts';

type Op = { kind: 'pre' | 'steady'; node: number } | { kind: 'wait'; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('pre' as const), node: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('steady' as const), node: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 5000 }) }),
);

/** Applies outcomes the way services/fleet-lock.ts does: expired deleted, added inserted, released deleted. */
function run(
  slots: number,
  leaseMs: number,
  ops: Op[],
  check: (holders: Holder[], now: number) => void,
): void {
  let holders: Holder[] = [];
  let now = 1_000_000;
  for (const o of ops) {
    if (o.kind === 'wait') now += o.ms;
    else if (o.kind === 'pre') {
      const before = holders;
      const out = acquire({ slots, leaseMs, holders }, `n${o.node}`, now);
      holders = holders.filter((h) => !out.expired.includes(h));
      if (out.ok && out.added) holders = [...holders, out.added];
      if (out.ok && !out.added) {
        // Idempotent: the holder that was there, unchanged (no second slot, no longer lease).
        const mine = before.find((h) => h.id === `n${o.node}`);
        assert.deepEqual(out.holder, mine);
      }
    } else {
      const out = release(holders, `n${o.node}`, now);
      holders = holders.filter((h) => !out.expired.includes(h) && h !== out.released);
    }
    check(holders, now);
  }
}

describe('fleet lock rules', () => {
  it('never has more live holders than slots at any instant, and a node holds at most one slot', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1000, max: 8000 }),
        fc.array(op, { maxLength: 80 }),
        (slots, lease, ops) =>
          run(slots, lease, ops, (holders, now) => {
            const live = expire(holders, now).live;
            assert.ok(live.length <= slots, `${live.length} holders, ${slots} slots`);
            assert.ok(holders.length <= slots);
            assert.equal(new Set(holders.map((h) => h.id)).size, holders.length);
          }),
      ),
      { numRuns: 300 },
    );
  });

  it('pre-reboot is idempotent: asking again changes nothing', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.array(op, { maxLength: 40 }),
        fc.integer({ min: 0, max: 7 }),
        (slots, ops, node) => {
          let state: Holder[] = [];
          const now = 5_000_000;
          run(slots, 60_000, ops, (h) => {
            state = h;
          });
          const id = `n${node}`;
          const first = acquire({ slots, leaseMs: 60_000, holders: state }, id, now);
          const after =
            first.ok && first.added
              ? [...state.filter((h) => !first.expired.includes(h)), first.added]
              : state;
          const second = acquire({ slots, leaseMs: 60_000, holders: after }, id, now + 10);
          assert.equal(second.ok, first.ok);
          if (first.ok && second.ok) {
            assert.equal(second.added, undefined);
            assert.deepEqual(second.holder, first.holder);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('expiry frees exactly the holders whose lease ended (at expiresAt, not before)', () => {
    const holder = fc.record({
      id: fc.string({ minLength: 1, maxLength: 4 }),
      acquiredAt: fc.integer({ min: 0, max: 1000 }),
      expiresAt: fc.integer({ min: 0, max: 3000 }),
    });
    fc.assert(
      fc.property(fc.array(holder, { maxLength: 20 }), fc.integer({ min: 0, max: 3000 }), (holders, now) => {
        const { live, expired } = expire(holders, now);
        assert.deepEqual(
          expired,
          holders.filter((h) => h.expiresAt <= now),
        );
        assert.deepEqual(
          live,
          holders.filter((h) => h.expiresAt > now),
        );
      }),
    );
  });

  it('a full group frees an expired slot for the next node and reports the expired holder', () => {
    const a = { id: 'a', acquiredAt: 0, expiresAt: 100 };
    assert.deepEqual(acquire({ slots: 1, leaseMs: 100, holders: [a] }, 'b', 99), {
      ok: false,
      reason: 'full',
      expired: [],
    });
    const out = acquire({ slots: 1, leaseMs: 100, holders: [a] }, 'b', 100);
    assert.ok(out.ok);
    assert.deepEqual(out.expired, [a]);
    assert.deepEqual(out.added, { id: 'b', acquiredAt: 100, expiresAt: 200 });
  });

  it('lowering the slots lets nobody new in until enough holders left', () => {
    const hs = ['a', 'b', 'c'].map((id) => ({ id, acquiredAt: 0, expiresAt: 1000 }));
    assert.equal(acquire({ slots: 2, leaseMs: 10, holders: hs }, 'd', 1).ok, false);
    assert.equal(acquire({ slots: 2, leaseMs: 10, holders: hs.slice(1) }, 'd', 1).ok, false);
    assert.equal(acquire({ slots: 2, leaseMs: 10, holders: hs.slice(2) }, 'd', 1).ok, true);
  });

  it('address allow-lists take CIDRs and single addresses, and refuse anything else', () => {
    const list = addressList(['10.0.0.0/8', '192.168.1.7', 'fd00::/8']);
    assert.ok(list.check('10.1.2.3', 'ipv4'));
    assert.ok(list.check('192.168.1.7', 'ipv4'));
    assert.ok(!list.check('192.168.1.8', 'ipv4'));
    assert.ok(list.check('fd12::1', 'ipv6'));
    assert.ok(!list.check('127.0.0.1', 'ipv4'));
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '10.0.0.0/', '::1/129', ''])
      assert.throws(() => addressList([bad]), /invalid address or CIDR/, bad);
  });
});
