// The crash-loop case and local control: a release that keeps killing the machine during probation is
// rolled back by `agent boot-guard` before the service starts again; local hold/pin/rollback win, with no server.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  activeRelease,
  enrollToken,
  GOOD,
  journalOf,
  kill,
  OLD,
  pausedAt,
  pin,
  publishReleases,
  report,
  ringfence,
  seededDevice,
  settled,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { checkinsSeen } from './helpers/agent-fleet.ts';
import { guardProcesses, killTracked } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

describe('boot guard and local control', () => {
  let ts: TestServer;
  let content: string;
  before(async () => {
    ts = await startTestServer();
    content = await publishReleases(ts);
  });
  after(() => ts.close());
  afterEach(() => killTracked()); // passed or failed, no agent outlives its test

  it('a crash loop during probation is rolled back by the boot guard after max_attempts, quarantined, reported', async () => {
    const d = seededDevice(ts, content, 'loop', await enrollToken(ts, 1));
    start(d, 'probation');
    const id = await waitEnrolled(ts, d);
    // A release whose own checks would pass: only the crash loop can undo it.
    await pin(ts, d, GOOD);
    await pausedAt(d, 'probation');
    await kill(d); // the machine dies while the new release is on probation
    assert.equal(activeRelease(d), GOOD);
    for (let boot = 1; boot <= 3; boot++) {
      // A service manager brings the machine up again: the boot guard runs first.
      const g = ringfence(['agent', 'boot-guard', '--config', d.config]);
      assert.equal(g.code, 0, g.out);
      const j = journalOf(d);
      if (boot < 3) {
        assert.equal(j.txn?.attempts, boot, `boot ${boot}: one attempt counted`);
        assert.equal(
          activeRelease(d),
          GOOD,
          `boot ${boot}: below max_attempts the new release gets another chance`,
        );
        start(d, 'probation'); // the agent starts, re-enters probation, and the machine dies again
        await pausedAt(d, 'probation');
        assert.equal(journalOf(d).txn?.attempts, boot, 'the agent did not count the same boot twice');
        await kill(d);
      } else {
        // Past max_attempts: rolled back before the service starts, with no server and no person.
        assert.match(g.out, /rollback/);
        assert.equal(activeRelease(d), OLD);
        assert.equal(j.txn, null);
        assert.equal(j.current, OLD);
        assert.deepEqual(j.quarantined, [GOOD]);
      }
    }
    start(d);
    await settled(ts, d, id, GOOD);
    const [r] = await report(ts, id, GOOD);
    assert.equal(r.outcome, 'rolled-back');
    assert.equal(JSON.parse(r.detail).class, 'crash-loop');
    assert.match(r.reason ?? '', /interrupted 3 times/);
    // The server records the device as rolled back, and the quarantined release is not applied again.
    const dev = await until(
      () =>
        ts.srv.ctx.store.db
          .selectFrom('device_components')
          .selectAll()
          .where('device_id', '=', id)
          .executeTakeFirst(),
      (c) => !!c && JSON.parse(c.quarantined).includes(GOOD),
      120_000,
      'server sees quarantine',
    );
    assert.equal(dev?.version, OLD);
    await checkinsSeen(ts, d); // several check-ins, each still offering GOOD
    assert.equal(activeRelease(d), OLD);
    assert.equal(journalOf(d).txn, null);
    await kill(d);
  });

  it('local pin and hold win over the server; rollback and clear-quarantine work with no server', async () => {
    const d = seededDevice(ts, content, 'local', await enrollToken(ts, 1));
    let r = ringfence(['agent', 'pin', `sensor-content@${OLD}`, '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    start(d);
    const id = await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    await checkinsSeen(ts, d); // several check-ins, each offering GOOD
    assert.equal(activeRelease(d), OLD, 'a local pin wins over a server pin');
    assert.equal(journalOf(d).txn, null);
    // Check-ins report the local pin as the component's state: the server counts it as held on the device.
    const pinnedRow = await ts.srv.ctx.store.db
      .selectFrom('device_components')
      .select('state')
      .where('device_id', '=', id)
      .executeTakeFirst();
    assert.equal(pinnedRow?.state, 'pinned');
    await kill(d);

    r = ringfence(['agent', 'unpin', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    start(d);
    await settled(ts, d, id, GOOD);
    assert.equal(activeRelease(d), GOOD);
    await kill(d);

    // A crash right after the commit was journaled, before its report was queued, leaves the transaction open
    // in `committed` (the agent has not started since). The operator's rollback settles it, then undoes it.
    const journalFile = join(d.dir, 'state', 'component-sensor-content.json');
    const settledJournal = journalOf(d);
    writeFileSync(
      journalFile,
      JSON.stringify({
        ...settledJournal,
        txn: {
          id: 'txn-crashed-after-commit',
          version: GOOD,
          from: OLD,
          phase: 'committed',
          attempts: 0,
          startedAt: Date.now(),
          failure: null,
        },
      }),
    );

    // No server needed: the operator rolls back on the device.
    r = ringfence(['agent', 'rollback', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    assert.equal(activeRelease(d), OLD);
    let j = journalOf(d);
    assert.equal(j.current, OLD);
    assert.equal(j.txn, null);
    assert.deepEqual(j.quarantined, [GOOD]);
    const queued = JSON.parse(readFileSync(join(d.dir, 'state', 'outbox.json'), 'utf8')) as Array<{
      txn_id: string;
      outcome: string;
      class?: string;
    }>;
    assert.ok(
      queued.some((q) => q.txn_id === 'txn-crashed-after-commit' && q.outcome === 'succeeded'),
      'the interrupted commit is reported',
    );
    assert.ok(
      queued.some((q) => q.outcome === 'rolled-back' && q.class === 'operator'),
      'the rollback is reported',
    );

    r = ringfence(['agent', 'hold', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    r = ringfence(['agent', 'clear-quarantine', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    r = ringfence(['agent', 'status', '--json', '--config', d.config]);
    const st = JSON.parse(r.out) as {
      components: Array<{ hold: boolean; quarantined: string[]; active: string }>;
    };
    assert.equal(st.components[0].hold, true);
    assert.deepEqual(st.components[0].quarantined, []);
    assert.equal(st.components[0].active, OLD);

    start(d);
    // The operator rollback reaches the server as a report of its own.
    await until(
      async () => (await report(ts, id, GOOD)).map((x) => JSON.parse(x.detail).class as string),
      (classes) => classes.includes('operator'),
      120_000,
      'operator rollback reported',
    );
    await checkinsSeen(ts, d);
    assert.equal(activeRelease(d), OLD, 'a local hold wins: the server still asks for GOOD');
    await kill(d);

    r = ringfence(['agent', 'unhold', '--config', d.config]);
    assert.equal(r.code, 0, r.out);
    start(d);
    await until(
      async () => journalOf(d).current,
      (v) => v === GOOD,
      120_000,
      're-applied after unhold and cleared quarantine',
    );
    await kill(d);
    j = journalOf(d);
    assert.equal(activeRelease(d), GOOD);

    r = ringfence(['agent', 'pin', 'nope', '--config', d.config]);
    assert.notEqual(r.code, 0);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
