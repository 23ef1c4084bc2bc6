// Wake-ups with real agent processes: with a 300 s poll interval, agents hear of a rollout at once and it
// completes in seconds; with `wake: off` it completes by polling; behind a proxy that answers 404 for /v1/wait
// the agent polls as before, with no tight loop.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { api } from '../src/cli/client.ts';
import { prepareDevice, type SpawnedDevice, startAgent, stopAgents } from '../src/demo/fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { checkinsSeen, fleetUntil, importGoodAndBadContent } from './helpers/agent-fleet.ts';
import { guardProcesses, track } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const PLAN = `name: waves
first_wave_cap: 100%
waves:
  - name: canary
    size: 1
  - name: rest
    size: 100%
`;

/** Starts `n` agents named PREFIX-i against `server`, polling every `pollMs`, with the given wake option. */
async function startAgents(
  ts: TestServer,
  prefix: string,
  n: number,
  pollMs: number,
  wake: 'long-poll' | 'off',
  server = ts.url,
): Promise<SpawnedDevice[]> {
  const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: n });
  const devices = Array.from({ length: n }, (_, i) => {
    const d = prepareDevice(
      join(ts.dir, 'devices'),
      { name: `${prefix}-${i}`, labels: { grp: prefix } },
      server,
      tok.token,
      {
        pollMs,
        probationMs: 300,
      },
    );
    writeFileSync(d.config, stringify({ ...parse(readFileSync(d.config, 'utf8')), wake }));
    return d;
  });
  for (const d of devices) track(startAgent(d, { RINGFENCE_LOG_LEVEL: 'warn' }));
  return devices;
}

const active = (d: SpawnedDevice) => {
  try {
    return readlinkSync(join(d.appDir, 'current')).split('/').pop();
  } catch {
    return null;
  }
};

/** Waits until every device of the group has checked in once with its component (so a rollout selects it). */
const checkedIn = (ts: TestServer, prefix: string, n: number) =>
  fleetUntil(
    ts,
    (l) => l.filter((d) => d.name.startsWith(`${prefix}-`) && d.components.length > 0).length === n,
    90_000,
    `${prefix} fleet checked in`,
  );

describe('wake-ups with real agents', { timeout: 400_000 }, () => {
  const all: SpawnedDevice[] = [];
  after(() => stopAgents(all));

  it('agents polling every 300 s hear the rollout at once and it completes in seconds', async () => {
    const ts = await startTestServer({ pollSeconds: 300 });
    try {
      const woken = await startAgents(ts, 'lp', 3, 300_000, 'long-poll');
      all.push(...woken);
      await checkedIn(ts, 'lp', 3);
      await importGoodAndBadContent(ts);
      await api(ts.conn, 'POST', '/v1/admin/releases/sensor-content@1.0.0/approve', {});
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });
      const t0 = Date.now();
      const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: 'sensor-content@1.0.0',
        plan: 'waves',
      });
      // Every agent's next poll is at least 240 s away (300 s, jitter ±20 %): completing well before that is
      // the wake-ups' doing. The ceiling is generous for a busy machine.
      const end = await until(
        () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
        (v) => ['completed', 'halted'].includes(v.status),
        200_000,
        'rollout with wake-ups',
      );
      const took = Date.now() - t0;
      assert.equal(end.status, 'completed');
      assert.ok(took < 200_000, `took ${took} ms`);
      for (const d of woken) assert.equal(active(d), '1.0.0', d.name);
    } finally {
      await stopAgents(all);
      await ts.close();
    }
  });

  it('with wake: off the same rollout runs by polling, and no wait is held', async () => {
    const ts = await startTestServer({ pollSeconds: 1 });
    try {
      const polled = await startAgents(ts, 'off', 2, 1000, 'off');
      all.push(...polled);
      await checkedIn(ts, 'off', 2);
      await importGoodAndBadContent(ts);
      await api(ts.conn, 'POST', '/v1/admin/releases/sensor-content@1.0.0/approve', {});
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });
      const r2 = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
        release: 'sensor-content@1.0.0',
        plan: 'waves',
      });
      const end2 = await until(
        () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r2.id}`),
        (v) => ['completed', 'halted'].includes(v.status),
        120_000,
        'rollout by polling',
      );
      assert.equal(end2.status, 'completed');
      for (const d of polled) assert.equal(active(d), '1.0.0', d.name);
      assert.equal(ts.srv.ctx.wake.hub.held, 0, 'agents with wake off hold no waits');
    } finally {
      await stopAgents(all);
      await ts.close();
    }
  });

  it('behind a proxy that answers 404 for /v1/wait the agent polls as before, without a tight loop', async () => {
    const ts = await startTestServer({ pollSeconds: 2 });
    const px = await proxy(ts, (res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{}'));
    try {
      const [d] = await startAgents(ts, 'px', 1, 2000, 'long-poll', px.url);
      all.push(d);
      await checkedIn(ts, 'px', 1);
      const t0 = Date.now();
      const before = { ...px.seen };
      await checkinsSeen(ts, d, 3);
      const secs = (Date.now() - t0) / 1000;
      const checkins = px.seen.checkins - before.checkins;
      const waits = px.seen.waits - before.waits;
      // One refused wait per interval at most, and check-ins at the poll interval (2 s, jitter), not faster.
      assert.ok(waits <= checkins + 1, `${waits} waits for ${checkins} check-ins`);
      assert.ok(checkins <= secs / 1.6 + 2, `${checkins} check-ins in ${secs.toFixed(1)} s`);
      assert.ok(waits >= 1, 'the agent tried the wake offer');
    } finally {
      await stopAgents(all);
      await ts.close();
      await px.close();
    }
  });

  // A server whose waits always answer `changed` (and, in the second case, whose check-in answers carry a new
  // desired_tag each time, as if something changed) gets spaced-out check-ins, not a loop.
  for (const [flipTags, prefix] of [
    [false, 'sp'],
    [true, 'fl'],
  ] as const) {
    it(`waits that always answer changed${flipTags ? ', tags flipped at every check-in,' : ''} get spaced-out check-ins, not a loop`, async () => {
      const ts = await startTestServer({ pollSeconds: 300 });
      const px = await proxy(
        ts,
        (res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"changed":true}'),
        flipTags,
      );
      try {
        const [d] = await startAgents(ts, prefix, 1, 300_000, 'long-poll', px.url);
        all.push(d);
        await checkedIn(ts, prefix, 1);
        await until(
          async () => px.seen.waits,
          (n) => n >= 3,
          60_000,
          'three spurious wake-ups',
        );
        const t0 = Date.now();
        const before = px.seen.checkins;
        await until(
          async () => Date.now() - t0,
          (ms) => ms >= 8000,
          60_000,
          '8 s of spurious wake-ups',
        );
        const checkins = px.seen.checkins - before;
        // Spacing 1 s, 2 s, 4 s, 8 s …: a handful in 8 s (a loop would make hundreds).
        assert.ok(checkins >= 1 && checkins <= 5, `${checkins} check-ins in 8 s`);
      } finally {
        await stopAgents(all);
        await ts.close();
        await px.close();
      }
    });
  }
});

/**
 * A pass-through proxy to the test server that answers /v1/wait itself with `onWait`; counts both routes.
 * With `flipTags`, every check-in answer carries a new desired_tag (a server claiming a change each time).
 */
async function proxy(ts: TestServer, onWait: (res: ServerResponse) => void, flipTags = false) {
  const target = new URL(ts.url);
  const seen = { checkins: 0, waits: 0 };
  const server: Server = createServer((req, res) => {
    if (req.url?.startsWith('/v1/wait')) {
      seen.waits++;
      req.resume();
      onWait(res);
      return;
    }
    if (req.url?.startsWith('/v1/checkin')) seen.checkins++;
    const up = request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (r) => {
        if (!(flipTags && req.url?.startsWith('/v1/checkin') && r.statusCode === 200)) {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          body.desired_tag = randomBytes(8).toString('hex');
          const out = Buffer.from(JSON.stringify(body));
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': out.length }).end(out);
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    seen,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
