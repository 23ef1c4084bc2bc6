// The rollout services over a real SQLite database in a temp folder, without HTTP: supersede, the one active
// rollout per component, the promotion gate and stop-all, each one transaction.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { ACTIVE, eventRefusal, type RolloutStatus } from '../src/engine/rollout-state.ts';
import { listAudit } from '../src/server/db/audit.ts';
import { openStore, type Store } from '../src/server/db/database.ts';
import { setControls } from '../src/server/db/devices.ts';
import { encode } from '../src/server/db/json.ts';
import { findRollout, listRolloutIds } from '../src/server/db/rollouts.ts';
import { RolloutDriver } from '../src/server/rollout-driver.ts';
import { applyPlan } from '../src/server/services/plans.ts';
import { approveRelease, importRelease } from '../src/server/services/releases.ts';
import {
  activeRolloutRefusal,
  approvalRefusal,
  PAUSABLE,
  promotionRefusal,
} from '../src/server/services/rollout-rules.ts';
import { type RolloutDeps, startRollout, steerRollout, stopAll } from '../src/server/services/rollouts.ts';
import { seedDevice } from './helpers/store-seed.ts';

const ALL_STATUSES: RolloutStatus[] = [
  'pending',
  'running',
  'baking',
  'awaiting-approval',
  'paused',
  'halted',
  'completed',
  'aborted',
  'rolling-back',
  'rolled-back',
];

/** Any blob "exists" with the length asked for: the release service checks names and lengths only. */
const blobs = { has: () => true, size: () => 10 };

/** A store in a temp folder with `n` devices running `app@0` (half of them on the early channel). */
async function world(
  n: number,
): Promise<{ deps: RolloutDeps; store: Store; dataDir: string; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-services-'));
  const store = await openStore({ dataDir: join(dir, 'data') });
  const deps: RolloutDeps = {
    store,
    driver: new RolloutDriver(store, pino({ level: 'silent' }), Date.now),
    clock: Date.now,
  };
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const id = `d${i}`;
    await seedDevice(store, { id, labels: { site: 'a' }, component: 'app', version: '0', now });
    await setControls(store.db, id, {
      held: false,
      pins: {},
      channel: i % 2 === 0 ? 'early' : 'general',
      deferredUntil: null,
    });
  }
  for (const v of ['1', '2', '3']) {
    await importRelease(
      store.db,
      blobs,
      { component: 'app', version: v, artifacts: [{ name: 'app.bin', sha256: 'a'.repeat(64), length: 10 }] },
      now,
    );
    await approveRelease(store.db, join(dir, 'data'), `app@${v}`, now);
  }
  await applyPlan(
    store.db,
    {
      source: 'name: slow\nwaves:\n  - name: one\n    size: 1\n  - name: rest\n    size: 100%\n',
      allowWide: true,
      reason: 'small test fleet',
    },
    now,
  );
  return {
    deps,
    store,
    dataDir: join(dir, 'data'),
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every rollout's id and status, oldest first. */
async function statuses(store: Store): Promise<Array<[number, RolloutStatus]>> {
  const out: Array<[number, RolloutStatus]> = [];
  for (const id of await listRolloutIds(store.db)) {
    const ro = await findRollout(store.db, id);
    if (ro) out.push([id, ro.status]);
  }
  return out;
}

describe('rollout rules (pure)', () => {
  it('stop-all pauses exactly the active statuses the engine accepts a pause in', () => {
    const engine = ALL_STATUSES.filter((s) => ACTIVE.has(s) && eventRefusal(s, 'pause') === null);
    assert.deepEqual([...PAUSABLE].sort(), engine.sort());
    assert.deepEqual([...PAUSABLE].sort(), ['awaiting-approval', 'baking', 'pending', 'running']);
  });

  it('the promotion gate refuses general before early completed, unless forced', () => {
    const base = { ref: 'app@1', channel: 'general' as const, completedOnEarly: false, force: false };
    assert.match(promotionRefusal(base) ?? '', /has not completed on the early channel/);
    assert.equal(promotionRefusal({ ...base, force: true }), null);
    assert.equal(promotionRefusal({ ...base, completedOnEarly: true }), null);
    assert.equal(promotionRefusal({ ...base, channel: 'early' }), null);
    assert.equal(promotionRefusal({ ...base, channel: null }), null);
  });

  it('only an approved release is rolled out', () => {
    assert.match(approvalRefusal('app@1', null) ?? '', /release app@1 is not approved/);
    assert.equal(approvalRefusal('app@1', 5), null);
  });

  it('one active rollout per component', () => {
    assert.equal(activeRolloutRefusal('app', []), null);
    assert.match(
      activeRolloutRefusal('app', [{ id: 7, version: '1' }]) ?? '',
      /rollout 7 of app@1 is still active/,
    );
  });
});

describe('rollout services (real SQLite)', () => {
  let w: Awaited<ReturnType<typeof world>>;
  before(async () => {
    w = await world(6);
  });
  after(() => w.close());

  it('refuses a second active rollout of a component, changing nothing', async () => {
    const first = await startRollout(w.deps, {
      release: 'app@1',
      plan: 'slow',
      allowWide: true,
      reason: 'small test fleet',
    });
    assert.equal((await findRollout(w.store.db, first))?.status, 'running');
    const before = await statuses(w.store);
    await assert.rejects(
      startRollout(w.deps, { release: 'app@2', plan: 'slow', allowWide: true, reason: 'small test fleet' }),
      (e: Error & { statusCode?: number }) =>
        e.statusCode === 409 && /rollout \d+ of app@1 is still active/.test(e.message),
    );
    assert.deepEqual(await statuses(w.store), before);
  });

  it('supersede is one transaction: a failure after the older rollout was aborted leaves both as they were', async () => {
    const before = await statuses(w.store);
    const [oldId] = before.at(-1) ?? [0];
    const auditBefore = (await listAudit(w.store.db, { limit: 1000 })).length;
    // Injected failure: creating the new rollout fails, after the supersede step aborted the older one.
    await sql`create trigger fail_new_rollout before insert on rollouts begin select raise(abort, 'injected failure'); end`.execute(
      w.store.db,
    );
    try {
      await assert.rejects(
        startRollout(w.deps, {
          release: 'app@2',
          plan: 'slow',
          allowWide: true,
          supersede: true,
          reason: 'fix',
        }),
        /injected failure/,
      );
    } finally {
      await sql`drop trigger fail_new_rollout`.execute(w.store.db);
    }
    assert.deepEqual(await statuses(w.store), before, 'the older rollout is still running, no new one');
    assert.equal((await listAudit(w.store.db, { limit: 1000 })).length, auditBefore, 'nothing audited');

    // Without the failure the same request supersedes: older aborted, newer running, in one go.
    const newId = await startRollout(w.deps, {
      release: 'app@2',
      plan: 'slow',
      allowWide: true,
      supersede: true,
      reason: 'fix',
    });
    const old = await findRollout(w.store.db, oldId);
    assert.equal(old?.status, 'aborted');
    assert.equal(old?.state.reason, 'superseded by app@2: fix');
    assert.equal((await findRollout(w.store.db, newId))?.status, 'running');
  });

  it('gates promotion to the general channel on completion on the early channel (force is audited)', async () => {
    await stopAndAbortAll(w.deps, w.store);
    await assert.rejects(
      startRollout(w.deps, {
        release: 'app@3',
        plan: 'slow',
        channel: 'general',
        allowWide: true,
        reason: 'small test fleet',
      }),
      (e: Error & { statusCode?: number }) =>
        e.statusCode === 409 && /app@3 has not completed on the early channel/.test(e.message),
    );
    // Completed on the early channel: promotion passes.
    const early = await startRollout(w.deps, {
      release: 'app@3',
      plan: 'slow',
      channel: 'early',
      allowWide: true,
      reason: 'small test fleet',
    });
    await w.store.db.updateTable('rollouts').set({ status: 'completed' }).where('id', '=', early).execute();
    const general = await startRollout(w.deps, {
      release: 'app@3',
      plan: 'slow',
      channel: 'general',
      allowWide: true,
      reason: 'small test fleet',
    });
    assert.equal((await findRollout(w.store.db, general))?.channel, 'general');
    await steerRollout(w.deps, general, 'abort');

    // Forced past the gate (a release never on early): allowed, and the audit says so.
    const forced = await startRollout(w.deps, {
      release: 'app@1',
      plan: 'slow',
      channel: 'general',
      force: true,
      allowWide: true,
      reason: 'small test fleet',
    });
    const created = (await listAudit(w.store.db, { subject: `rollout/${forced}` })).find(
      (e) => e.action === 'rollout.created',
    );
    assert.ok(created, 'the creation is audited');
    assert.equal(Reflect.get(Object(created.detail), 'force_promote'), true);
    await steerRollout(w.deps, forced, 'abort');
  });

  it('stop-all pauses exactly the rollouts in a pausable status, in one transaction', async () => {
    // One rollout per status (of its own component), the status written as the engine would have left it.
    const ids = new Map<RolloutStatus, number>();
    const now = Date.now();
    for (const s of ALL_STATUSES) {
      await importRelease(
        w.store.db,
        blobs,
        { component: `c-${s}`, version: '1', artifacts: [{ name: 'x', sha256: 'b'.repeat(64), length: 10 }] },
        now,
      );
      await approveRelease(w.store.db, w.dataDir, `c-${s}@1`, now);
      const id = await startRollout(w.deps, {
        release: `c-${s}@1`,
        plan: 'slow',
        allowWide: true,
        reason: 'small test fleet',
      });
      const ro = await findRollout(w.store.db, id);
      assert.ok(ro);
      await w.store.db
        .updateTable('rollouts')
        .set({ status: s, state: encode({ ...ro.state, status: s }) })
        .where('id', '=', id)
        .execute();
      ids.set(s, id);
    }
    const app = (await statuses(w.store)).filter(([, s]) => s !== 'aborted' && s !== 'completed');
    const paused = await stopAll(w.deps, { reason: 'test of the kill switch' });
    const want = ALL_STATUSES.filter((s) => eventRefusal(s, 'pause') === null && ACTIVE.has(s)).map(
      (s) => ids.get(s) ?? -1,
    );
    // `app` rollouts left active by the earlier tests are none (each was aborted or completed).
    assert.deepEqual(
      app.filter(([id]) => ![...ids.values()].includes(id)),
      [],
    );
    assert.deepEqual(
      paused.sort((a, b) => a - b),
      want.sort((a, b) => a - b),
    );
    for (const s of ALL_STATUSES) {
      const ro = await findRollout(w.store.db, ids.get(s) ?? -1);
      assert.equal(ro?.status, PAUSABLE.has(s) ? 'paused' : s, `a rollout that was ${s}`);
    }
  });
});

/** Aborts every active rollout (a clean slate between tests). */
async function stopAndAbortAll(deps: RolloutDeps, store: Store): Promise<void> {
  for (const [id, s] of await statuses(store)) if (ACTIVE.has(s)) await steerRollout(deps, id, 'abort');
}
