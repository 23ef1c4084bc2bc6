// The pure part of reboot coordination (src/agent/fleet-lock.ts) and its configuration: when a staged
// transaction asks for a slot again, waits or is dropped; what may activate; which slots may be given back.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseAgentConfig } from '../src/agent/config.ts';
import {
  asking,
  granted,
  lockGroup,
  mayActivate,
  refused,
  releasable,
  released,
  resume,
  waitingNote,
} from '../src/agent/fleet-lock.ts';
import type { ComponentJournal } from '../src/agent/journal.ts';
import { activating, begin, close, commit, probation, staged } from '../src/agent/transaction.ts';

const RETRY = { base: 1000, max: 8000 };
const half = () => 0.999_999; // jitter at its top: delays are base·2^(n-1), capped

function fresh(component = 'kernel'): ComponentJournal {
  return {
    component,
    current: '1.0',
    previous: null,
    quarantined: [],
    hold: false,
    pin: null,
    txn: null,
    lastHealth: null,
  };
}

const stagedTxn = (c = 'kernel', id = 'txn-1') => staged(begin(fresh(c), id, '2.0', 0));

describe('fleet-lock decisions', () => {
  it('the group comes from the label, "default" without it', () => {
    assert.equal(lockGroup({ 'fleet-lock-group': 'rack-1' }, 'fleet-lock-group'), 'rack-1');
    assert.equal(lockGroup({ other: 'x' }, 'fleet-lock-group'), 'default');
    assert.equal(lockGroup({ 'fleet-lock-group': '' }, 'fleet-lock-group'), 'default');
  });

  it('only a staged transaction (or one recovery re-activates) asks; a grant lets it activate, nothing else does', () => {
    assert.throws(() => asking(fresh(), 'g', 1), /not staged/);
    assert.throws(() => asking(commit(probation(activating(stagedTxn()))), 'g', 1), /not staged/);
    // Recovery asks again before it re-runs activation after a crash (the old grant may have expired).
    assert.equal(asking(probation(activating(stagedTxn())), 'g', 1).slot?.state, 'acquiring');
    const s = stagedTxn();
    assert.equal(mayActivate(s, true), false, 'no slot yet');
    assert.equal(mayActivate(s, false), true, 'a component without reboot: true needs none');
    const a = asking(s, 'g', 5);
    assert.deepEqual(a.slot, { group: 'g', state: 'acquiring', txn: 'txn-1', at: 5 });
    assert.equal(mayActivate(a, true), false, 'asked is not held');
    const g = granted(a, 6);
    assert.equal(g.slot?.state, 'held');
    assert.equal(g.slotWait, null);
    assert.equal(mayActivate(g, true), true);
    // A slot held for another transaction does not count.
    const other = { ...g, txn: { ...g.txn!, id: 'txn-2' } };
    assert.equal(mayActivate(other, true), false);
    assert.throws(() => granted(stagedTxn(), 1), /asked for no slot/);
  });

  it('a refusal backs off exponentially up to the max and keeps when the wait began', () => {
    let j = asking(stagedTxn(), 'g', 0);
    const delays: number[] = [];
    let now = 100;
    for (let i = 0; i < 6; i++) {
      j = refused(j, 'failed_lock', now, RETRY, half);
      assert.equal(j.slot, null, 'refused: not held');
      delays.push(j.slotWait!.next_at - now);
      now = j.slotWait!.next_at;
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000, 8000]);
    assert.equal(j.slotWait?.since, 100);
    assert.equal(j.slotWait?.attempts, 6);
    assert.match(waitingNote(j) ?? '', /waiting for a reboot slot \(asked 6×: failed_lock\)/);
  });

  it('resume: waits out the backoff, asks again, drops the staged release when another is wanted', () => {
    assert.deepEqual(resume(stagedTxn(), '2.0', 0), { kind: 'none' }, 'not waiting');
    const w = refused(stagedTxn(), 'no slot', 1000, RETRY, half); // next_at 2000
    assert.deepEqual(resume(w, '2.0', 1500), { kind: 'wait', ms: 500 });
    assert.deepEqual(resume(w, '2.0', 2000), { kind: 'ask' });
    assert.equal(resume(w, '3.0', 2000).kind, 'discard', 'the server positively offers another version');
    assert.deepEqual(resume({ ...w, pin: '2.0' }, '3.0', 2000), { kind: 'ask' }, 'the local pin wins');
    assert.equal(resume({ ...w, pin: '3.0' }, null, 2000).kind, 'discard', 'a local pin to another version');
    assert.equal(resume({ ...w, hold: true }, '2.0', 2000).kind, 'discard', 'held on the device');
    assert.equal(resume({ ...w, hold: true }, null, 2000).kind, 'discard', 'held, offer or not');
  });

  it('resume: no positive offer (missing or erroneous) keeps the staged release and asks for no slot', () => {
    const w = refused(stagedTxn(), 'no slot', 1000, RETRY, half); // next_at 2000
    assert.deepEqual(resume(w, null, 1500), { kind: 'wait', ms: 500, why: 'not offered in this check-in' });
    assert.deepEqual(resume(w, null, 9000), { kind: 'wait', ms: 0, why: 'not offered in this check-in' });
    assert.deepEqual(resume({ ...w, pin: '2.0' }, null, 9000), { kind: 'ask' }, 'the local pin wants it');
  });

  it('resume: one left activating/probation by a crash is never dropped, asks again after its backoff', () => {
    for (const j of [activating(stagedTxn()), probation(activating(stagedTxn()))]) {
      const w = refused(asking(j, 'g', 0), 'failed_lock', 1000, RETRY, half); // next_at 2000
      assert.equal(w.txn?.phase, j.txn?.phase, 'refused keeps the phase');
      assert.match(waitingNote(w) ?? '', /waiting for a reboot slot/);
      assert.deepEqual(resume(w, '2.0', 1500), { kind: 'wait', ms: 500 });
      assert.deepEqual(resume(w, '2.0', 2000), { kind: 'ask' });
      assert.deepEqual(resume(w, '3.0', 2000), { kind: 'ask' }, 'something may be switched: not dropped');
      assert.deepEqual(resume(w, null, 2000), { kind: 'ask' });
      assert.deepEqual(resume(j, '2.0', 2000), { kind: 'none' }, 'not waiting');
    }
  });

  it('releasable: finished slots only, and a group only when no other transaction still uses it', () => {
    const held = (c: string, id: string) => granted(asking(stagedTxn(c, id), 'g', 0), 0);
    const finished = (c: string, id: string) => close(commit(probation(activating(held(c, id)))));
    const a = finished('a', 't-a');
    assert.deepEqual(releasable([a]), [{ group: 'g', components: ['a'] }]);
    // Committed but not yet closed is finished too (recovery closes it later).
    const c = commit(probation(activating(held('c', 't-c'))));
    assert.deepEqual(releasable([c]), [{ group: 'g', components: ['c'] }]);
    // Another component still in probation with the same group's slot: keep it.
    const b = probation(activating(held('b', 't-b')));
    assert.deepEqual(releasable([a, b]), []);
    // A slot asked for by a transaction recovery discarded (crash during pre-reboot) is given back.
    const lost = { ...asking(stagedTxn('d', 't-d'), 'g2', 0), txn: null };
    assert.deepEqual(releasable([lost, b]), [{ group: 'g2', components: ['d'] }]);
    // Staged and waiting (no slot) or never asked: nothing to release.
    assert.deepEqual(releasable([refused(stagedTxn(), 'x', 0, RETRY), fresh('e')]), []);
    assert.equal(released(a).slot, null);
  });
});

describe('fleet-lock configuration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-fleetlock-cfg-'));
  const file = join(dir, 'agent.yaml');
  const comp = (extra: string) => `components:
  - name: kernel
    backend: { type: dir, path: ./app }
${extra}`;
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('defaults: reboot false, group label fleet-lock-group; the secret file resolves next to the config', () => {
    const c = parseAgentConfig(`server: http://127.0.0.1:1\nstate_dir: ./s\n${comp('')}`, file);
    assert.equal(c.components[0].reboot, false);
    assert.deepEqual(c.fleet_lock, { group_label: 'fleet-lock-group', secret_header: undefined });
    const d = parseAgentConfig(
      `server: http://127.0.0.1:1
state_dir: ./s
fleet_lock:
  group_label: site
  url: http://127.0.0.1:2/
  secret_header: { name: X-Lock-Secret, value_file: ./secret }
${comp('    reboot: true')}`,
      file,
    );
    assert.equal(d.components[0].reboot, true);
    assert.equal(d.fleet_lock.group_label, 'site');
    assert.equal(d.fleet_lock.secret_header?.value_file, join(dir, 'secret'));
  });

  it('refuses reboot: true with no server to coordinate with, a bad header name, unknown keys', () => {
    assert.throws(
      () => parseAgentConfig(`state_dir: ./s\n${comp('    reboot: true')}`, file),
      /reboot: true needs a FleetLock server/,
    );
    assert.throws(
      () =>
        parseAgentConfig(
          `server: http://127.0.0.1:1\nstate_dir: ./s\nfleet_lock: { secret_header: { name: "bad name", value_file: x } }\n${comp('')}`,
          file,
        ),
      /header name/,
    );
    assert.throws(
      () =>
        parseAgentConfig(
          `server: http://127.0.0.1:1\nstate_dir: ./s\nfleet_lock: { group: x }\n${comp('')}`,
          file,
        ),
      /group/,
    );
    assert.throws(
      () =>
        parseAgentConfig(
          `server: http://127.0.0.1:1\nstate_dir: ./s\n${comp('    reboot: yes please')}`,
          file,
        ),
      /reboot/,
    );
  });
});
