// Crash safety with real agent processes: SIGKILL at every named transition and at random instants, then
// restart. The component must always be whole (old or new release, never in between) and end consistent
// with its health result, with the server told exactly once.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  assertWhole,
  BAD,
  enrollToken,
  GOOD,
  journalOf,
  kill,
  OLD,
  pausedAt,
  pin,
  publishReleases,
  report,
  seededDevice,
  settled,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { allSettled, guardProcesses, killTracked } from './helpers/processes.ts';
import { sleep, startTestServer, type TestServer } from './helpers/server.ts';

const GOOD_POINTS = ['downloaded', 'staged', 'activating', 'probation', 'before-commit'];
const BAD_POINTS = ['downloaded', 'staged', 'activating', 'probation', 'rolling-back'];

describe('agent crash safety (SIGKILL)', () => {
  let ts: TestServer;
  let content: string;
  const covered = new Set<string>();
  let randomKills = 0;
  const phaseAtKill: Record<string, number> = {};

  before(async () => {
    ts = await startTestServer();
    content = await publishReleases(ts);
  });
  after(async () => {
    console.log(
      `crash points covered: ${covered.size} named (${[...covered].sort().join(', ')}) + ${randomKills} random kills (journal phase at kill: ${JSON.stringify(phaseAtKill)})`,
    );
    await ts.close();
  });
  afterEach(() => killTracked()); // passed or failed, no agent outlives its test

  const scenarios = [
    ...GOOD_POINTS.map((p) => ({ point: p, version: GOOD })),
    ...BAD_POINTS.map((p) => ({ point: p, version: BAD })),
  ];

  it('kill at every named crash point, restart: whole, finished, consistent with health, reported once', async () => {
    const token = await enrollToken(ts, scenarios.length);
    // Two at a time: the machine has two cores, and each scenario runs two agent processes in turn.
    for (let i = 0; i < scenarios.length; i += 2) {
      await allSettled(
        scenarios.slice(i, i + 2).map(async ({ point, version }) => {
          const d = seededDevice(ts, content, `crash-${point}-${version}`, token);
          start(d, point);
          const id = await waitEnrolled(ts, d);
          await pin(ts, d, version);
          await pausedAt(d, point);
          await kill(d);
          // Right after the kill: old or new, whole.
          assertWhole(d, content, [OLD, version]);
          start(d);
          const j = await settled(ts, d, id, version);
          await kill(d);
          const running = assertWhole(d, content, [OLD, version]);
          const reports = await report(ts, id, version);
          assert.equal(reports.length, 1, `${d.name}: exactly one report for ${version}`);
          if (version === GOOD) {
            assert.equal(running, GOOD, `${d.name}: a healthy release ends committed`);
            assert.equal(j.current, GOOD);
            assert.equal(j.lastHealth?.ok, true);
            assert.equal(reports[0].outcome, 'succeeded');
          } else {
            assert.equal(running, OLD, `${d.name}: a crashing release ends rolled back`);
            assert.equal(j.current, OLD);
            assert.ok(j.quarantined.includes(BAD), 'the bad release is quarantined');
            assert.equal(reports[0].outcome, 'rolled-back');
            assert.equal(JSON.parse(reports[0].detail).class, 'health');
          }
          covered.add(`${point}/${version === GOOD ? 'healthy' : 'crashing'}`);
        }),
      );
    }
    assert.equal(covered.size, scenarios.length);
  });

  it('>= 50 randomly timed kills: always whole, and the end state matches health', async () => {
    const devices = 10;
    const killsEach = 5;
    const token = await enrollToken(ts, devices);
    await allSettled(
      Array.from({ length: devices }, async (_, n) => {
        const version = n % 2 === 0 ? BAD : GOOD;
        const d = seededDevice(ts, content, `random-${n}`, token, { probationMs: 1500 });
        start(d);
        const id = await waitEnrolled(ts, d);
        await pin(ts, d, version);
        for (let k = 0; k < killsEach; k++) {
          // Agent start-up takes ~0.4 s; kills land in start-up, download, staging, probation and after the end.
          await sleep(100 + Math.random() * 1100);
          await kill(d);
          randomKills++;
          const phase = journalOf(d).txn?.phase ?? 'no-txn';
          phaseAtKill[phase] = (phaseAtKill[phase] ?? 0) + 1;
          assertWhole(d, content, [OLD, version]);
          start(d);
        }
        const j = await settled(ts, d, id, version, 120_000);
        await kill(d);
        const running = assertWhole(d, content, [OLD, version]);
        assert.equal(j.current, running, `${d.name}: journal and disk agree`);
        if (version === BAD) {
          assert.equal(running, OLD, `${d.name}: a crashing release never stays`);
          assert.ok(j.quarantined.includes(BAD));
        } else if (running === GOOD) {
          assert.equal(j.lastHealth?.ok, true, `${d.name}: committed only after passing health checks`);
        } else {
          // Killed during probation max_attempts times: the boot-guard logic rolled it back as a crash loop.
          assert.ok(j.quarantined.includes(GOOD), `${d.name}: rolled back ⇒ quarantined`);
        }
        const reports = await report(ts, id, version);
        assert.ok(reports.length >= 1, `${d.name}: the server was told`);
        assert.equal(journalOf(d).txn, null);
      }),
    );
    assert.ok(randomKills >= 50, `${randomKills} random kills`);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
