// The rollout driver keeps each rollout's assignments between steps (services/assignment-cache.ts) and gives a
// steady step only the devices it looks at (a partial step). Over a real SQLite database: the same scripted
// rollout (three waves, concurrency limits, device reports, a transient failure and a retry, a retired device,
// a pause, a step whose transaction rolls back) ends with exactly the same rows whether the driver keeps
// nothing, keeps its copy, or two drivers with copies of their own (like two replicas) take turns; on SQLite
// and on PostgreSQL (row locks, RETURNING, bigint revisions).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import type { Report } from '../src/protocol/device.ts';
import type { ServerContext } from '../src/server/context.ts';
import { loadAssignments } from '../src/server/db/assignments.ts';
import { inTransaction, openStore, type Store } from '../src/server/db/database.ts';
import { liveDevicesByKey } from '../src/server/db/devices.ts';
import { findRollout } from '../src/server/db/rollouts.ts';
import { DEFAULT_LIMITS, Guards } from '../src/server/limits.ts';
import { createMetrics } from '../src/server/metrics.ts';
import { RolloutDriver } from '../src/server/rollout-driver.ts';
import { AssignmentCache } from '../src/server/services/assignment-cache.ts';
import { reportApplier } from '../src/server/services/device-reports.ts';
import { retireDevice } from '../src/server/services/fleet.ts';
import { applyPlan } from '../src/server/services/plans.ts';
import { approveRelease, importRelease } from '../src/server/services/releases.ts';
import { recentStepTimings, type StepTiming } from '../src/server/services/rollout-step.ts';
import { startRollout, steerRollout } from '../src/server/services/rollouts.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { seedDevice } from './helpers/store-seed.ts';

const N = 40;
const PLAN = `name: cached
waves:
  - name: canary
    size: 1
  - name: half
    size: 50%
    max_concurrent: 4
    max_failures: 2
  - name: rest
    size: 100%
    max_concurrent: 6
    max_failures: 2
`;
const blobs = { has: () => true, size: () => 10 };

interface Run {
  /** Every assignment row (without its revision) and the rollout's final state. */
  rows: string;
  state: string;
  timings: StepTiming[];
}

/**
 * Runs the script on a fresh database (SQLite in a temp folder, or the PostgreSQL database at `url`). `caches`:
 * one assignment cache per driver (drivers take turns stepping; 0 keeps nothing).
 */
async function runScript(caches: number[], url?: string): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-asg-cache-'));
  const store: Store = await openStore({ dataDir: join(dir, 'data'), url });
  try {
    let now = 1_700_000_000_000;
    const clock = () => now;
    const log = pino({ level: 'silent' });
    const drivers = caches.map((n) => new RolloutDriver(store, log, clock, new AssignmentCache(n)));
    for (let i = 0; i < N; i++) {
      const id = `d${String(i).padStart(2, '0')}`;
      await seedDevice(store, {
        id,
        labels: { site: i % 2 ? 'a' : 'b' },
        component: 'app',
        version: '0',
        now,
      });
    }
    await importRelease(
      store.db,
      blobs,
      { component: 'app', version: '1', artifacts: [{ name: 'a.bin', sha256: 'a'.repeat(64), length: 10 }] },
      now,
    );
    await approveRelease(store.db, join(dir, 'data'), 'app@1', now);
    await applyPlan(store.db, { source: PLAN, allowWide: true, reason: 'a 40-device test fleet' }, now);
    const firstTiming = recentStepTimings().length;
    const deps = (i: number) => ({ store, driver: drivers[i % drivers.length], clock });
    const id = await startRollout(deps(0), { release: 'app@1', plan: 'cached' });
    const apply = reportApplier({
      guards: new Guards({ ...DEFAULT_LIMITS, reportsPerDevicePerHour: 1e6, auditPerDevicePerHour: 1e6 }),
      metrics: createMetrics(),
    } as unknown as ServerContext);
    const report = async (deviceId: string, r: Omit<Report, 'component' | 'version' | 'txn_id'>) =>
      inTransaction(store, (tx) =>
        apply(tx, deviceId, [{ component: 'app', version: '1', txn_id: `${deviceId}-${now}`, ...r }], now),
      );
    let turn = 0;
    const stepAny = () => drivers[turn++ % drivers.length].stepRollout(id, [], 'engine');
    let failedOnce = false;
    for (let round = 0; round < 40; round++) {
      now += 1000;
      const offered = [...(await loadAssignments(store.db, id)).values()]
        .filter((a) => a.state === 'offered')
        .map((a) => a.deviceId)
        .sort();
      for (const [k, dev] of offered.entries()) {
        if (k % 3 === 2) continue; // some devices report a round later
        if (dev === 'd05' && !failedOnce) {
          failedOnce = true;
          await report(dev, { outcome: 'failed', class: 'download', reason: 'connection reset' });
        } else await report(dev, { outcome: 'succeeded' });
      }
      if (round === 3) {
        const [d] = await liveDevicesByKey(store.db, 'd33');
        assert.ok(d);
        await retireDevice(store.db, d, 'scrapped', now);
      }
      if (round === 4) await steerRollout(deps(1), id, 'pause');
      if (round === 5) await steerRollout(deps(0), id, 'resume');
      if (round === 6) await steerRollout(deps(1), id, 'retry');
      if (round === 7) {
        // A step whose transaction rolls back: nothing it computed may stay in any kept copy.
        const driver = drivers[turn % drivers.length];
        await assert.rejects(
          driver.exclusive(() =>
            inTransaction(store, async (tx) => {
              await driver.within(tx, id, [], 'engine', now);
              throw new Error('rolled back on purpose');
            }),
          ),
          /rolled back on purpose/,
        );
      }
      await stepAny();
      const ro = await findRollout(store.db, id);
      if (ro?.status === 'completed') break;
    }
    const ro = await findRollout(store.db, id);
    assert.ok(ro);
    const rows = await store.db
      .selectFrom('assignments')
      .select([
        'device_id',
        'wave',
        'state',
        'outcome',
        'offered_at',
        'reported_at',
        'reason',
        'failure_class',
      ])
      .where('rollout_id', '=', id)
      .orderBy('device_id')
      .execute();
    return {
      rows: JSON.stringify(rows),
      state: JSON.stringify({ status: ro.status, state: ro.state }),
      timings: recentStepTimings()
        .slice(firstTiming)
        .filter((t) => t.rolloutId === id),
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The three runs agree; kept copies and partial steps were really used. */
async function checkRuns(url?: () => Promise<string>): Promise<void> {
  const none = await runScript([0], await url?.());
  const kept = await runScript([2_000_000], await url?.());
  const replicas = await runScript([2_000_000, 2_000_000], await url?.());
  assert.match(none.state, /"status":"completed"/, 'the script completes the rollout');
  assert.equal(kept.rows, none.rows, 'a kept copy: same assignments');
  assert.equal(kept.state, none.state, 'a kept copy: same rollout');
  assert.equal(replicas.rows, none.rows, 'two drivers taking turns: same assignments');
  assert.equal(replicas.state, none.state, 'two drivers taking turns: same rollout');

  // Without a cache every step reads every row; with one, steady steps read the rows written since.
  assert.ok(none.timings.every((t) => t.read === 'full'));
  const reads = (r: Run) => new Set(r.timings.map((t) => t.read));
  assert.ok(reads(kept).has('delta'), `reports between steps are read as a delta: ${[...reads(kept)]}`);
  // Two drivers: each sees the other's writes as a delta of its own copy.
  assert.ok(replicas.timings.filter((t) => t.read === 'delta').length >= 5);
  // Steady steps look at queued devices only; wave starts read the whole fleet.
  const fleets = new Set(kept.timings.map((t) => t.fleet));
  assert.ok(fleets.has('partial'), `fleet reads: ${[...fleets]}`);
  assert.ok(fleets.has('partial-then-whole') || fleets.has('whole'));
  const partial = kept.timings.filter((t) => t.fleet === 'partial');
  assert.ok(
    partial.every((t) => t.devices < N),
    'a partial step reads fewer devices than the fleet',
  );
}

describe('kept assignments and partial steps', () => {
  it('give the same rollout as reading everything at every step, in one driver and across two (SQLite)', () =>
    checkRuns());

  describe('on PostgreSQL', {
    skip: pgBinDir() ? false : 'PostgreSQL is not installed (CI installs it)',
  }, () => {
    let cluster: PgCluster;
    let made = 0;
    before(async () => {
      cluster = await startPostgres();
    });
    after(() => cluster?.stop());
    /** A new empty database in the cluster, for one run. */
    const freshDb = async () => {
      const name = `asg_cache_${++made}`;
      const client = new pg.Client({ connectionString: cluster.url });
      await client.connect();
      try {
        await client.query(`create database ${name}`);
      } finally {
        await client.end();
      }
      return cluster.url.replace(/\/postgres$/, `/${name}`);
    };
    it('give the same rollout as reading everything at every step, in one driver and across two', () =>
      checkRuns(freshDb));
  });
});
