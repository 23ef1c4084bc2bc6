// Wake-ups on a real server over loopback HTTP: the check-in answer's tag and wake offer, POST /v1/wait held
// until the device's desired answer changes (operator hold and pin, a rollout's commands), no lost wake between
// check-in and wait, the limits (held cap, one wait per device, rate, bodies), a fast close, and "react at once":
// a failure report halts the rollout through the driver's nudge, not its (here very slow) tick.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { api, type Conn } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { enrollDevices, type ProtocolDevice, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const ALL = 'name: all\nfirst_wave_cap: 100%\nwaves:\n  - name: everyone\n    size: 100%\n';
const STRICT = `name: strict
first_wave_cap: 100%
on_failure: halt-and-rollback
waves:
  - name: everyone
    size: 100%
    max_failures: 0
`;

interface Answer {
  desired: Array<{ component: string; version: string }>;
  desired_tag?: string;
  wake?: { path: string; max_seconds: number };
}

/** One check-in of `d` running `component` at d.version; the whole answer. */
async function checkinFull(conn: Conn, d: ProtocolDevice, component: string, reports: unknown[] = []) {
  const res = await fetch(new URL('/v1/checkin', conn.server), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
    body: JSON.stringify({ components: [{ name: component, version: d.version }], reports }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as Answer;
}

/** One wait; resolves with the status, the body and how long it was held. */
async function wait(conn: Conn, token: string | null, body: unknown, raw?: string) {
  const t0 = Date.now();
  const res = await fetch(new URL('/v1/wait', conn.server), {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: raw ?? JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: JSON.parse(text || '{}'),
    ms: Date.now() - t0,
    retryAfter: res.headers.get('retry-after'),
  };
}

/** Resolves once the server holds `n` waits (its gauge), so a test acts only after the waits are registered. */
function heldWaits(ts: TestServer, n: number) {
  return until(
    async () => ts.srv.ctx.wake.hub.held,
    (h) => h === n,
    60_000,
    `${n} held waits`,
  );
}

describe('wake-ups', { timeout: 300_000 }, () => {
  it('the check-in answer carries the tag and the wake offer; a matching wait holds until a hold wakes it', async () => {
    const ts = await startTestServer({ pollSeconds: 300 });
    try {
      const [d] = await enrollDevices(ts.conn, [{ grp: 'a' }], 'wk', '1');
      const a = await checkinFull(ts.conn, d, 'wk');
      assert.match(a.desired_tag ?? '', /^[0-9a-f]{16}$/);
      assert.deepEqual(a.wake, { path: '/v1/wait', max_seconds: 25 });
      // A wait whose tag is current is held; an operator pin (to an approved release) changes the answer.
      const held = wait(ts.conn, d.token, { tag: a.desired_tag, seconds: 25 });
      await heldWaits(ts, 1);
      await release(ts.conn, 'wk', '2');
      await api(ts.conn, 'POST', '/v1/admin/fleet/pin', { selector: `id=${d.id}`, release: 'wk@2' });
      const w = await held;
      assert.deepEqual([w.status, w.body], [200, { changed: true }]);
      assert.ok(w.ms < 20_000, `answered after ${w.ms} ms, not at the hold's end`);
      const b = await checkinFull(ts.conn, d, 'wk');
      assert.deepEqual(
        b.desired.map((x) => x.version),
        ['2'],
      );
      assert.notEqual(b.desired_tag, a.desired_tag);
      // Hold (frozen: the pinned release it does not run yet is withdrawn) wakes the device too.
      const held2 = wait(ts.conn, d.token, { tag: b.desired_tag, seconds: 25 });
      await heldWaits(ts, 1);
      await api(ts.conn, 'POST', '/v1/admin/fleet/hold', { selector: `id=${d.id}` });
      assert.deepEqual((await held2).body, { changed: true });
      assert.deepEqual((await checkinFull(ts.conn, d, 'wk')).desired, []);
      // Nothing new: the hold ends at the seconds asked for, with changed: false.
      const c = await checkinFull(ts.conn, d, 'wk');
      const quiet = await wait(ts.conn, d.token, { tag: c.desired_tag, seconds: 1 });
      assert.deepEqual([quiet.status, quiet.body], [200, { changed: false }]);
      assert.ok(quiet.ms >= 900, `held ${quiet.ms} ms`);
    } finally {
      await ts.close();
    }
  });

  it('a change between check-in and wait is not lost: a stale tag answers at once', async () => {
    const ts = await startTestServer({ pollSeconds: 300 });
    try {
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: ALL });
      const [d] = await enrollDevices(ts.conn, [{ grp: 'b' }], 'lost', '1');
      const a = await checkinFull(ts.conn, d, 'lost');
      await release(ts.conn, 'lost', '2');
      await api(ts.conn, 'POST', '/v1/admin/rollouts', { release: 'lost@2', plan: 'all' });
      // The offer was committed after the check-in and before the wait: no notification reaches this wait.
      const w = await wait(ts.conn, d.token, { tag: a.desired_tag, seconds: 25 });
      assert.deepEqual([w.status, w.body], [200, { changed: true }]);
      assert.ok(w.ms < 10_000);
      assert.deepEqual(
        (await checkinFull(ts.conn, d, 'lost')).desired.map((x) => x.version),
        ['2'],
      );
    } finally {
      await ts.close();
    }
  });

  it('limits: held cap (503 + Retry-After), one wait per device, rate (429), bodies, tokens', async () => {
    const ts = await startTestServer({
      pollSeconds: 300,
      limits: { wakeMaxHeld: 2, waitBurst: 6, waitsPerDevicePerMinute: 1 },
    });
    try {
      const devs = await enrollDevices(ts.conn, [{ g: '1' }, { g: '2' }, { g: '3' }], 'lim', '1');
      const tags = await Promise.all(
        devs.map(async (d) => (await checkinFull(ts.conn, d, 'lim')).desired_tag),
      );
      const first = wait(ts.conn, devs[0].token, { tag: tags[0], seconds: 25 });
      const second = wait(ts.conn, devs[1].token, { tag: tags[1], seconds: 25 });
      await heldWaits(ts, 2);
      const over = await wait(ts.conn, devs[2].token, { tag: tags[2], seconds: 25 });
      assert.equal(over.status, 503);
      assert.ok(Number(over.retryAfter) >= 1, `retry-after ${over.retryAfter}`);
      // A newer wait of the same device ends the older one with changed: false, and takes its place.
      const again = wait(ts.conn, devs[0].token, { tag: tags[0], seconds: 1 });
      assert.deepEqual((await first).body, { changed: false });
      assert.deepEqual((await again).body, { changed: false });
      // Bodies and tokens are checked before anything is held.
      const bad = [
        { tag: 'xyz', seconds: 5 },
        { tag: tags[2], seconds: 0 },
        { tag: tags[2], seconds: 100_000 },
        { tag: tags[2] },
      ];
      for (const b of bad)
        assert.equal((await wait(ts.conn, devs[2].token, b)).status, 400, JSON.stringify(b));
      assert.equal((await wait(ts.conn, devs[2].token, null, `{"tag":"${'a'.repeat(2000)}"}`)).status, 413);
      assert.equal((await wait(ts.conn, null, { tag: tags[2], seconds: 5 })).status, 401);
      assert.equal((await wait(ts.conn, 'rfdev_not-a-token', { tag: tags[2], seconds: 5 })).status, 401);
      // devs[2] has spent its burst of 6 (the 503 and the refused bodies): the next is over its rate.
      const fast = await wait(ts.conn, devs[2].token, { tag: tags[2], seconds: 1 });
      assert.equal(fast.status, 429);
      assert.ok(Number(fast.retryAfter) >= 1);
      ts.srv.ctx.wake.hub.close(); // ends `second`, as a server close does
      assert.deepEqual((await second).body, { changed: false });
    } finally {
      await ts.close();
    }
  });

  it('closing the server answers every held wait at once', async () => {
    const ts = await startTestServer({ pollSeconds: 300 });
    const devs = await enrollDevices(ts.conn, [{ g: '1' }, { g: '2' }, { g: '3' }], 'cls', '1');
    const tags = await Promise.all(devs.map(async (d) => (await checkinFull(ts.conn, d, 'cls')).desired_tag));
    const held = devs.map((d, i) => wait(ts.conn, d.token, { tag: tags[i], seconds: 25 }));
    await heldWaits(ts, 3);
    const t0 = Date.now();
    await ts.close();
    const closeMs = Date.now() - t0;
    for (const w of await Promise.all(held)) assert.deepEqual([w.status, w.body], [200, { changed: false }]);
    assert.ok(closeMs < 10_000, `close took ${closeMs} ms`);
  });

  it('react at once: a failure over budget halts at the report, and the reverts wake the waiting devices', async (t) => {
    // The periodic tick is made ten minutes long: only the nudge after the report's check-in can step in time.
    const ts = await startTestServer({ pollSeconds: 300, tickMs: 600_000 });
    try {
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: STRICT });
      const devs = await enrollDevices(ts.conn, [{ g: '1' }, { g: '2' }, { g: '3' }], 'rx', '1');
      await release(ts.conn, 'rx', '1');
      await release(ts.conn, 'rx', '2');
      const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: 'rx@2',
        plan: 'strict',
      });
      const answers = await Promise.all(devs.map((d) => checkinFull(ts.conn, d, 'rx')));
      for (const a of answers)
        assert.deepEqual(
          a.desired.map((x) => x.version),
          ['2'],
        );
      // Two devices hold their waits with the offer in hand; the third fails the release.
      const held = [1, 2].map((i) =>
        wait(ts.conn, devs[i].token, { tag: answers[i].desired_tag, seconds: 25 }),
      );
      await heldWaits(ts, 2);
      const t0 = Date.now();
      const report = {
        txn_id: 'rx-fail-1',
        component: 'rx',
        version: '2',
        outcome: 'rolled-back',
        class: 'health',
        reason: 'probe failed',
      };
      await checkinFull(ts.conn, devs[0], 'rx', [report]);
      const woken = await Promise.all(held);
      for (const w of woken) assert.deepEqual([w.status, w.body], [200, { changed: true }]);
      const reactMs = Date.now() - t0;
      t.diagnostic(`waiting devices woken ${reactMs} ms after the failure report was sent`);
      assert.ok(reactMs < 20_000, `woken after ${reactMs} ms`);
      const v = await api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`);
      assert.ok(['rolling-back', 'rolled-back'].includes(v.status), v.status);
      // What they now hear is the revert to 1.
      for (const i of [1, 2])
        assert.deepEqual(
          (await checkinFull(ts.conn, devs[i], 'rx')).desired.map((x) => x.version),
          ['1'],
        );
    } finally {
      await ts.close();
    }
  });

  it("holds stay below the server's own timeouts, so a held wait is answered, never cut", async () => {
    const ts = await startTestServer({ limits: { requestTimeoutS: 8, idleTimeoutS: 8 } });
    try {
      const [d] = await enrollDevices(ts.conn, [{ g: '1' }], 'to', '1');
      const a = await checkinFull(ts.conn, d, 'to');
      assert.deepEqual(a.wake, { path: '/v1/wait', max_seconds: 3 });
      const w = await wait(ts.conn, d.token, { tag: a.desired_tag, seconds: 25 });
      assert.deepEqual([w.status, w.body], [200, { changed: false }]);
      assert.ok(w.ms >= 2900 && w.ms < 8000, `held ${w.ms} ms`);
    } finally {
      await ts.close();
    }
  });

  it('with wake-ups disabled the answer offers none and /v1/wait does not exist', async () => {
    const ts = await startTestServer({ limits: { wakeEnabled: false } });
    try {
      const [d] = await enrollDevices(ts.conn, [{ g: '1' }], 'off', '1');
      const a = await checkinFull(ts.conn, d, 'off');
      assert.equal(a.wake, undefined);
      assert.match(a.desired_tag ?? '', /^[0-9a-f]{16}$/);
      assert.equal((await wait(ts.conn, d.token, { tag: a.desired_tag, seconds: 5 })).status, 404);
    } finally {
      await ts.close();
    }
  });
});
