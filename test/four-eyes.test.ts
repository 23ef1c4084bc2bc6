// Four eyes and required reasons over a real server on loopback, with two operators: alice (admin: she may
// import, start and approve) and bob (approver). Nobody approves what they imported or started themselves,
// unless the plan or the server turns the rule off; exceptional actions need a reason, kept in the audit log.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api, type Conn } from '../src/cli/client.ts';
import type { AuditEntry } from '../src/server/db/audit.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import type { ReleaseView } from '../src/server/services/releases.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const GATED = 'name: gated\nwaves:\n  - name: prod\n    size: 100%\n    approval: true\n';
const OPEN = 'name: open\nfour_eyes: false\nwaves:\n  - name: prod\n    size: 100%\n    approval: true\n';
const WIDE = 'name: wide\nwaves:\n  - name: all\n    size: 100%\n';

/** Creates an operator through the admin API; returns its connection. */
async function addOperator(ts: TestServer, name: string, role: string): Promise<Conn> {
  const r = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/operators', { name, role });
  return { server: ts.url, token: r.token };
}

/** Uploads a one-file blob and imports `component@version` as `conn` (not approved). */
async function importAs(conn: Conn, component: string, version: string): Promise<void> {
  const blob = await api<{ sha256: string; length: number }>(
    conn,
    'POST',
    '/v1/admin/blobs',
    new TextEncoder().encode(`${component} ${version}\n`),
  );
  await api(conn, 'POST', '/v1/admin/releases', {
    component,
    version,
    artifacts: [{ name: 'f.txt', ...blob }],
  });
}

/** The HTTP status and message of a refused call. */
async function refusedWith(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message.replace(/^\S+ \S+: /, '');
  }
  assert.fail('the call was not refused');
}

const releaseOf = async (conn: Conn, ref: string) =>
  (await api<ReleaseView[]>(conn, 'GET', '/v1/admin/releases')).find(
    (r) => `${r.component}@${r.version}` === ref,
  );
const auditCount = async (conn: Conn) =>
  (await api<AuditEntry[]>(conn, 'GET', '/v1/admin/audit?limit=1000')).length;
const lastAudit = async (conn: Conn, subject: string, action: string) =>
  (await api<AuditEntry[]>(conn, 'GET', `/v1/admin/audit?subject=${encodeURIComponent(subject)}`))
    .filter((e) => e.action === action)
    .at(-1);

describe('four eyes (server-wide rule on, the default)', () => {
  let ts: TestServer;
  let alice: Conn;
  let aliceCi: Conn;
  let bob: Conn;
  before(async () => {
    ts = await startTestServer({ governance: { fourEyes: true } });
    alice = await addOperator(ts, 'alice', 'admin');
    bob = await addOperator(ts, 'bob', 'approver');
    const ci = await api<{ token: string }>(alice, 'POST', '/v1/admin/operators/alice/tokens', {
      name: 'ci',
    });
    aliceCi = { server: ts.url, token: ci.token };
    await api(alice, 'POST', '/v1/admin/plans', { source: GATED });
    await api(alice, 'POST', '/v1/admin/plans', { source: OPEN });
  });
  after(() => ts.close());

  it('a release waits for anyone but its importer; she is refused (409, nothing changed), bob approves', async () => {
    await importAs(aliceCi, 'shop', '2.0.0');
    const waiting = await releaseOf(bob, 'shop@2.0.0');
    assert.equal(waiting?.imported_by, 'alice/ci');
    assert.deepEqual(waiting?.awaiting_approval, { what: 'release shop@2.0.0', by_anyone_but: 'alice' });
    const audits = await auditCount(alice);
    for (const who of [alice, aliceCi])
      assert.equal(
        await refusedWith(api(who, 'POST', '/v1/admin/releases/shop@2.0.0/approve', {})),
        '409 four eyes: alice imported shop@2.0.0 and may not approve it (another approver must)',
      );
    assert.deepEqual(await releaseOf(bob, 'shop@2.0.0'), waiting, 'nothing changed');
    assert.equal(await auditCount(alice), audits, 'nothing audited');

    await api(bob, 'POST', '/v1/admin/releases/shop@2.0.0/approve', {});
    const approved = await releaseOf(alice, 'shop@2.0.0');
    assert.equal(approved?.approved_by, 'bob');
    assert.equal(approved?.awaiting_approval, null);
    assert.equal((await lastAudit(alice, 'release/shop@2.0.0', 'release.imported'))?.actor, 'alice/ci');
    assert.equal((await lastAudit(alice, 'release/shop@2.0.0', 'release.approved'))?.actor, 'bob');
  });

  it("an approval wave waits for anyone but the rollout's starter; she is refused, bob approves", async () => {
    const started = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'shop@2.0.0',
      plan: 'gated',
    });
    assert.equal(started.started_by, 'alice');
    assert.equal(started.status, 'awaiting-approval');
    assert.deepEqual(started.awaiting_approval, {
      what: `wave "prod" of rollout ${started.id}`,
      by_anyone_but: 'alice',
    });
    assert.equal((await lastAudit(alice, `rollout/${started.id}`, 'rollout.created'))?.actor, 'alice');
    const audits = await auditCount(alice);
    for (const who of [alice, aliceCi])
      assert.equal(
        await refusedWith(api(who, 'POST', `/v1/admin/rollouts/${started.id}/approve`, {})),
        `409 four eyes: alice started rollout ${started.id} and may not approve its wave "prod"`,
      );
    const still = await api<RolloutView>(bob, 'GET', `/v1/admin/rollouts/${started.id}`);
    assert.equal(still.status, 'awaiting-approval', 'nothing changed');
    assert.deepEqual(still.state.approved, []);
    assert.equal(await auditCount(alice), audits, 'nothing audited');

    const approved = await api<RolloutView>(bob, 'POST', `/v1/admin/rollouts/${started.id}/approve`, {});
    assert.notEqual(approved.status, 'awaiting-approval');
    assert.equal(approved.awaiting_approval, null);
    assert.deepEqual(approved.state.approved, [0]);
  });

  it('a plan with four_eyes: false lets the starter approve its waves (and says anyone may)', async () => {
    await importAs(alice, 'tool', '1');
    await api(bob, 'POST', '/v1/admin/releases/tool@1/approve', {});
    const r = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'tool@1',
      plan: 'open',
    });
    assert.deepEqual(r.awaiting_approval, { what: `wave "prod" of rollout ${r.id}`, by_anyone_but: null });
    const approved = await api<RolloutView>(alice, 'POST', `/v1/admin/rollouts/${r.id}/approve`, {});
    assert.deepEqual(approved.state.approved, [0]);
  });

  it('only an admin may apply a plan with four_eyes: false (an operator gets 403, nothing stored)', async () => {
    const olga = await addOperator(ts, 'olga', 'operator');
    const source = OPEN.replace('name: open', 'name: olgas');
    const why = await refusedWith(api(olga, 'POST', '/v1/admin/plans', { source }));
    assert.match(why, /^403 plan olgas sets four_eyes: false, which needs role admin/);
    const plans = await api<Array<{ name: string }>>(olga, 'GET', '/v1/admin/plans');
    assert.ok(!plans.some((p) => p.name === 'olgas'), 'the plan was not stored');
    await api(olga, 'POST', '/v1/admin/plans', { source: source.replace('four_eyes: false\n', '') });
  });

  it('rows from before four eyes (no importer, no starter) are not refused', async () => {
    await importAs(alice, 'old', '1');
    await ts.srv.ctx.store.db
      .updateTable('releases')
      .set({ imported_by: null })
      .where('component', '=', 'old')
      .execute();
    const rel = await releaseOf(alice, 'old@1');
    assert.equal(rel?.imported_by, null);
    assert.deepEqual(rel?.awaiting_approval, { what: 'release old@1', by_anyone_but: null });
    await api(alice, 'POST', '/v1/admin/releases/old@1/approve', {});

    const r = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'old@1',
      plan: 'gated',
    });
    await ts.srv.ctx.store.db
      .updateTable('rollouts')
      .set({ started_by: null })
      .where('id', '=', r.id)
      .execute();
    const view = await api<RolloutView>(alice, 'GET', `/v1/admin/rollouts/${r.id}`);
    assert.equal(view.started_by, null);
    assert.equal(view.awaiting_approval?.by_anyone_but, null);
    const approved = await api<RolloutView>(alice, 'POST', `/v1/admin/rollouts/${r.id}/approve`, {});
    assert.deepEqual(approved.state.approved, [0]);
  });
});

describe('four eyes off server-wide (governance.four_eyes: false)', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ governance: { fourEyes: false } });
  });
  after(() => ts.close());

  it('the importer approves her release and the starter her wave', async () => {
    const alice = await addOperator(ts, 'alice', 'admin');
    await importAs(alice, 'shop', '1');
    assert.deepEqual((await releaseOf(alice, 'shop@1'))?.awaiting_approval, {
      what: 'release shop@1',
      by_anyone_but: null,
    });
    await api(alice, 'POST', '/v1/admin/releases/shop@1/approve', {});
    assert.equal((await releaseOf(alice, 'shop@1'))?.approved_by, 'alice');
    await api(alice, 'POST', '/v1/admin/plans', { source: GATED });
    const r = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'shop@1',
      plan: 'gated',
    });
    assert.equal(r.awaiting_approval?.by_anyone_but, null);
    const approved = await api<RolloutView>(alice, 'POST', `/v1/admin/rollouts/${r.id}/approve`, {});
    assert.deepEqual(approved.state.approved, [0]);
  });
});

describe('reasons required for exceptional actions', () => {
  let ts: TestServer;
  let alice: Conn;
  let bob: Conn;
  before(async () => {
    ts = await startTestServer({ governance: { fourEyes: true } });
    alice = await addOperator(ts, 'alice', 'operator');
    bob = await addOperator(ts, 'bob', 'approver');
    for (const v of ['1', '2', '3']) {
      await importAs(alice, 'app', v);
      await api(bob, 'POST', `/v1/admin/releases/app@${v}/approve`, {});
    }
  });
  after(() => ts.close());

  it('plan apply with allow_wide: 400 without a reason, applied and audited with one', async () => {
    const audits = await auditCount(ts.conn);
    for (const reason of [undefined, '', '  '])
      assert.equal(
        await refusedWith(api(alice, 'POST', '/v1/admin/plans', { source: WIDE, allow_wide: true, reason })),
        '400 a reason is required for allow-wide',
      );
    assert.equal(await auditCount(ts.conn), audits, 'nothing applied or audited');
    assert.deepEqual(await api(alice, 'GET', '/v1/admin/plans'), []);
    await api(alice, 'POST', '/v1/admin/plans', { source: WIDE, allow_wide: true, reason: 'lab fleet of 0' });
    const entry = await lastAudit(ts.conn, 'plan/wide', 'plan.applied');
    assert.equal(entry?.actor, 'alice');
    assert.equal((entry?.detail as { reason?: string } | undefined)?.reason, 'lab fleet of 0');
  });

  it('rollout start: emergency, force and allow_wide each need a reason, which the audit entry keeps', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ emergency: true }, 'an emergency start'],
      [{ channel: 'general', force: true }, 'forcing the promotion gate'],
      [{ allow_wide: true }, 'allow-wide'],
    ];
    for (const [extra, what] of cases)
      assert.equal(
        await refusedWith(
          api(alice, 'POST', '/v1/admin/rollouts', { release: 'app@1', plan: 'wide', ...extra }),
        ),
        `400 a reason is required for ${what}`,
      );
    assert.deepEqual(await api(alice, 'GET', '/v1/admin/rollouts'), [], 'nothing started');
    const r = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'app@1',
      plan: 'wide',
      emergency: true,
      allow_wide: true,
      reason: 'CVE-2025-0001',
    });
    assert.equal(r.state.emergency, true);
    const entry = await lastAudit(ts.conn, `rollout/${r.id}`, 'rollout.created');
    assert.equal(entry?.actor, 'alice');
    assert.equal((entry?.detail as { reason?: string } | undefined)?.reason, 'CVE-2025-0001');
  });

  it('stop-all: 400 without a reason (nothing paused), audited with one', async () => {
    const active = (await api<RolloutView[]>(alice, 'GET', '/v1/admin/rollouts')).filter(
      (r) => r.status !== 'completed' && r.status !== 'aborted',
    );
    // An empty (completed) rollout is paused by nothing; a pending one is: start one that waits for its age.
    await api(alice, 'POST', '/v1/admin/plans', {
      source: 'name: aged\nrelease_age: 30d\nwaves:\n  - name: all\n    size: 1\n',
    });
    const aged = await api<RolloutView>(alice, 'POST', '/v1/admin/rollouts', {
      release: 'app@2',
      plan: 'aged',
    });
    assert.equal(aged.status, 'pending');
    for (const body of [undefined, {}, { reason: ' ' }])
      assert.equal(
        await refusedWith(api(alice, 'POST', '/v1/admin/rollouts/stop-all', body)),
        '400 a reason is required for stop-all',
      );
    assert.equal((await api<RolloutView>(alice, 'GET', `/v1/admin/rollouts/${aged.id}`)).status, 'pending');
    const { paused } = await api<{ paused: number[] }>(alice, 'POST', '/v1/admin/rollouts/stop-all', {
      reason: 'incident 42',
    });
    assert.deepEqual(paused, [...active.map((r) => r.id), aged.id]);
    const entry = await lastAudit(ts.conn, 'rollouts', 'rollout.stop-all');
    assert.equal(entry?.actor, 'alice');
    assert.deepEqual(entry?.detail, { reason: 'incident 42', paused });
  });
});
