// FleetLock end to end (issue 14): a real server over HTTP, asked exactly as Zincati asks (src/fleet_lock/mod.rs
// in coreos/zincati: POST, header `fleet-lock-protocol: true`, a pretty-printed JSON body, no content type, no
// user agent), the admin API and CLI, leases on an injected clock, the audit log, the restrictions, and two
// replicas on one PostgreSQL racing for the last slot.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import SQLite from 'better-sqlite3';
import pino from 'pino';
import { BIN } from '../src/demo/fleet.ts';
import { fleetLockOf, loadServerConfig } from '../src/server/config.ts';
import { listAudit } from '../src/server/db/audit.ts';
import { lockHoldersByGroup } from '../src/server/db/fleet-locks.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { guardProcesses } from './helpers/processes.ts';
import { callAs, startTestServer, type TestServer, until } from './helpers/server.ts';

const run = promisify(execFile);

interface Answer {
  status: number;
  body: string;
  json: { kind?: string; value?: string };
  retryAfter?: string;
}

/**
 * One request shaped like Zincati's: reqwest with `.body(String)` and one header, so no content-type and no
 * user-agent; the body is serde_json::to_string_pretty of {client_params: {id, group}} (fields in that order).
 */
function zincati(
  base: string,
  endpoint: 'pre-reboot' | 'steady-state',
  id: string,
  group: string,
  opts: { headers?: Record<string, string>; body?: string; noProtocolHeader?: boolean } = {},
): Promise<Answer> {
  const body =
    opts.body ??
    `{\n  "client_params": {\n    "id": ${JSON.stringify(id)},\n    "group": ${JSON.stringify(group)}\n  }\n}`;
  // Zincati joins "v1/pre-reboot" to its base_url, which ends in "/fleetlock/".
  const url = new URL(`v1/${endpoint}`, `${base}/fleetlock/`);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          ...(opts.noProtocolHeader ? {} : { 'fleet-lock-protocol': 'true' }),
          accept: '*/*',
          'content-length': Buffer.byteLength(body),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json = {};
          try {
            json = text ? JSON.parse(text) : {};
          } catch {}
          const retryAfter = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, body: text, json, retryAfter });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A refusal in the protocol's shape: a non-200 status and {kind, value}, both non-empty strings. */
function refused(a: Answer, status: number, kind: string): void {
  assert.equal(a.status, status, a.body);
  assert.equal(a.json.kind, kind, a.body);
  assert.ok(typeof a.json.value === 'string' && a.json.value.length > 0, a.body);
}

const ok = (a: Answer) => assert.equal(a.status, 200, a.body);

const lockGroupRows = (ts: TestServer) => ts.srv.ctx.store.db.selectFrom('lock_groups').selectAll().execute();

/** The group's holders as the admin API lists them (`token`: another replica's server has none of its own). */
async function holders(ts: TestServer, group: string, token = ts.conn.token): Promise<string[]> {
  const r = await callAs(ts.url, 'GET', '/v1/admin/locks', token);
  assert.equal(r.status, 200);
  const g = (r.body.groups as Array<{ name: string; holders: Array<{ id: string }> }>).find(
    (x) => x.name === group,
  );
  return (g?.holders ?? []).map((h) => h.id).sort();
}

async function setGroup(ts: TestServer, group: string, slots: number, leaseMs: number): Promise<void> {
  const r = await callAs(ts.url, 'PUT', `/v1/admin/locks/${group}`, ts.conn.token, {
    slots,
    lease_ms: leaseMs,
  });
  assert.equal(r.status, 200, r.body.message);
}

const audit = async (ts: TestServer, action: string) =>
  (await listAudit(ts.srv.ctx.store.db, { limit: 1000 })).filter((e) => e.action === action);

/** Rates no test of the protocol itself reaches (its requests all come from 127.0.0.1 on a frozen clock). */
const UNLIMITED = {
  perAddressPerMinute: 100_000,
  perIdPerMinute: 100_000,
  failuresPerAddressPerMinute: 100_000,
};

describe('FleetLock server (Zincati-shaped requests, real server)', { timeout: 300_000 }, () => {
  guardProcesses();
  let ts: TestServer;
  let now = 1_750_000_000_000;

  before(async () => {
    ts = await startTestServer({
      clock: () => now,
      // The sweep runs often here, so a test waits for its audit entry rather than for seconds.
      fleetLock: { enabled: true, sweepMs: 50, rateLimit: UNLIMITED },
    });
  });
  after(async () => ts?.close());

  it('two slots, three nodes: the third waits until one reaches steady state', async () => {
    await setGroup(ts, 'workers', 2, 30 * 60_000);
    ok(await zincati(ts.url, 'pre-reboot', 'node-a', 'workers'));
    ok(await zincati(ts.url, 'pre-reboot', 'node-b', 'workers'));
    refused(await zincati(ts.url, 'pre-reboot', 'node-c', 'workers'), 409, 'failed_lock_semaphore_full');
    assert.deepEqual(await holders(ts, 'workers'), ['node-a', 'node-b']);
    // Idempotent: a holder asking again still holds its one slot, and the lease is not extended.
    const before = (await callAs(ts.url, 'GET', '/v1/admin/locks', ts.conn.token)).body;
    now += 1000;
    ok(await zincati(ts.url, 'pre-reboot', 'node-a', 'workers'));
    assert.deepEqual(
      (await callAs(ts.url, 'GET', '/v1/admin/locks', ts.conn.token)).body.groups,
      before.groups,
    );
    // Steady state gives the slot back; the waiting node gets it.
    ok(await zincati(ts.url, 'steady-state', 'node-a', 'workers'));
    ok(await zincati(ts.url, 'pre-reboot', 'node-c', 'workers'));
    assert.deepEqual(await holders(ts, 'workers'), ['node-b', 'node-c']);
    // Unlock if held: Zincati calls steady-state on every start, holding a slot or not.
    ok(await zincati(ts.url, 'steady-state', 'node-a', 'workers'));
    ok(await zincati(ts.url, 'steady-state', 'node-b', 'workers'));
    ok(await zincati(ts.url, 'steady-state', 'node-c', 'workers'));
    assert.deepEqual(await holders(ts, 'workers'), []);

    const locked = (await audit(ts, 'fleetlock.locked')).filter((e) =>
      e.subject.startsWith('fleetlock/workers/'),
    );
    assert.deepEqual(locked.map((e) => e.subject).sort(), [
      'fleetlock/workers/node-a',
      'fleetlock/workers/node-b',
      'fleetlock/workers/node-c',
    ]);
    assert.equal(locked[0].actor, 'fleetlock');
    assert.match(String((locked[0].detail as { from: string }).from), /127\.0\.0\.1/);
    const unlocked = (await audit(ts, 'fleetlock.unlocked')).filter((e) =>
      e.subject.startsWith('fleetlock/workers/'),
    );
    assert.equal(unlocked.length, 3, 'only real releases are audited');
  });

  it('the group "default" works without `lock set` (one slot); other unknown groups are refused', async () => {
    ok(await zincati(ts.url, 'pre-reboot', 'e0f3745b108f471cbd4883c6fbed8cdd', 'default'));
    refused(
      await zincati(ts.url, 'pre-reboot', 'c988d2509fdf4cdcbed39037c56406fb', 'default'),
      409,
      'failed_lock_semaphore_full',
    );
    ok(await zincati(ts.url, 'steady-state', 'e0f3745b108f471cbd4883c6fbed8cdd', 'default'));
    refused(await zincati(ts.url, 'pre-reboot', 'node-a', 'mock-workers'), 400, 'unknown_group');
    refused(await zincati(ts.url, 'steady-state', 'node-a', 'mock-workers'), 400, 'unknown_group');
    // The metric hook counts holders per group.
    ok(await zincati(ts.url, 'pre-reboot', 'node-m', 'default'));
    const counts = await lockHoldersByGroup(ts.srv.ctx.store.db, now);
    assert.deepEqual(
      counts.find((c) => c.group === 'default'),
      { group: 'default', holders: 1 },
    );
    assert.deepEqual(
      counts.find((c) => c.group === 'workers'),
      { group: 'workers', holders: 0 },
    );
    ok(await zincati(ts.url, 'steady-state', 'node-m', 'default'));
  });

  it('a holder that does not reach steady state within its lease loses its slot, audited', async () => {
    await setGroup(ts, 'lease', 1, 60_000);
    ok(await zincati(ts.url, 'pre-reboot', 'slow', 'lease'));
    now += 59_999;
    refused(await zincati(ts.url, 'pre-reboot', 'next', 'lease'), 409, 'failed_lock_semaphore_full');
    assert.deepEqual(await holders(ts, 'lease'), ['slow']);
    now += 1; // the lease ends now
    assert.deepEqual(await holders(ts, 'lease'), [], 'an expired holder is never listed as holding');
    const expired = await until(
      () => audit(ts, 'fleetlock.lease-expired'),
      (l) => l.some((e) => e.subject === 'fleetlock/lease/slow'),
      30_000,
      'the sweep to audit the expiry',
    );
    const e = expired.find((x) => x.subject === 'fleetlock/lease/slow')!;
    assert.equal(e.actor, 'server');
    assert.deepEqual(e.detail, { group: 'lease', id: 'slow', held_for_ms: 60_000, lease_ms: 60_000 });
    ok(await zincati(ts.url, 'pre-reboot', 'next', 'lease'));
    // The node that lost its slot comes back after its reboot: unlocking what it no longer holds is fine.
    ok(await zincati(ts.url, 'steady-state', 'slow', 'lease'));
    assert.deepEqual(await holders(ts, 'lease'), ['next']);
    assert.equal(
      (await audit(ts, 'fleetlock.lease-expired')).filter((x) => x.subject === 'fleetlock/lease/slow').length,
      1,
    );
    ok(await zincati(ts.url, 'steady-state', 'next', 'lease'));
  });

  it('an operator releases a slot (audited with the reason); releasing nothing is 404', async () => {
    await setGroup(ts, 'ops', 1, 60_000);
    ok(await zincati(ts.url, 'pre-reboot', 'dead-node', 'ops'));
    const r = await callAs(
      ts.url,
      'DELETE',
      '/v1/admin/locks/ops/holders/dead-node?reason=reinstalled',
      ts.conn.token,
    );
    assert.equal(r.status, 200, r.body.message);
    assert.deepEqual(await holders(ts, 'ops'), []);
    const [e] = (await audit(ts, 'fleetlock.released')).filter(
      (x) => x.subject === 'fleetlock/ops/dead-node',
    );
    assert.equal(e.actor, 'admin');
    assert.equal((e.detail as { reason: string }).reason, 'reinstalled');
    assert.equal(
      (await callAs(ts.url, 'DELETE', '/v1/admin/locks/ops/holders/dead-node', ts.conn.token)).status,
      404,
    );
    assert.equal(
      (await callAs(ts.url, 'DELETE', '/v1/admin/locks/nope/holders/x', ts.conn.token)).status,
      404,
    );
    // The admin routes need a token.
    assert.equal((await callAs(ts.url, 'GET', '/v1/admin/locks', null)).status, 401);
    assert.equal(
      (await callAs(ts.url, 'PUT', '/v1/admin/locks/ops', ts.conn.token, { slots: 0, lease_ms: 1000 }))
        .status,
      400,
    );
  });

  it('malformed requests get the protocol error JSON with a non-200 status', async () => {
    refused(
      await zincati(ts.url, 'pre-reboot', 'n', 'workers', { noProtocolHeader: true }),
      400,
      'invalid_protocol_header',
    );
    refused(
      await zincati(ts.url, 'pre-reboot', 'n', 'workers', { headers: { 'fleet-lock-protocol': 'yes' } }),
      400,
      'invalid_protocol_header',
    );
    const bad = (body: string) => zincati(ts.url, 'pre-reboot', '', '', { body });
    refused(await bad(''), 400, 'invalid_client_identity');
    refused(await bad('{not json'), 400, 'invalid_client_identity');
    refused(await bad('[]'), 400, 'invalid_client_identity');
    refused(await bad('{"client_params": {"id": "n"}}'), 400, 'invalid_client_identity');
    refused(await bad('{"client_params": {"id": "", "group": "workers"}}'), 400, 'invalid_client_identity');
    refused(await bad('{"client_params": {"id": 7, "group": "workers"}}'), 400, 'invalid_client_identity');
    refused(await bad('{"client_params": {"id": "n", "group": "work ers"}}'), 400, 'invalid_client_identity');
    refused(
      await bad('{"client_params": {"id": "n", "group": "workers", "x": 1}}'),
      400,
      'invalid_client_identity',
    );
    refused(
      await bad('{"client_params": {"id": "n", "group": "workers"}, "x": 1}'),
      400,
      'invalid_client_identity',
    );
    refused(
      await bad(JSON.stringify({ client_params: { id: 'n'.repeat(257), group: 'workers' } })),
      400,
      'invalid_client_identity',
    );
    refused(
      await bad(JSON.stringify({ client_params: { id: 'n', group: 'g'.repeat(257) } })),
      400,
      'invalid_client_identity',
    );
    refused(
      await bad(`{"client_params": {"id": "n", "group": "workers"}, "pad": "${'x'.repeat(5000)}"}`),
      413,
      'invalid_client_identity',
    );
    // 256 characters are fine; `curl -d` (a form content type, as in the protocol's example) is fine.
    await setGroup(ts, 'wide', 3, 60_000);
    ok(await zincati(ts.url, 'pre-reboot', 'n'.repeat(256), 'wide'));
    ok(
      await zincati(ts.url, 'pre-reboot', 'curl-node', 'wide', {
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      }),
    );
    assert.deepEqual(await holders(ts, 'wide'), ['curl-node', 'n'.repeat(256)]);
  });

  it('the CLI: lock set, list (holders, time left) and release', async () => {
    const cli = async (args: string[]) => {
      try {
        const r = await run(process.execPath, [BIN, ...args], {
          env: { ...process.env, RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token },
        });
        return { code: 0, stdout: r.stdout, stderr: r.stderr };
      } catch (e) {
        const err = e as { code: number; stdout: string; stderr: string };
        return { code: err.code, stdout: err.stdout, stderr: err.stderr };
      }
    };
    const set = await cli(['lock', 'set', 'cli', '--slots', '2', '--lease', '30m']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /lock group cli: 2 slot\(s\), lease 30m/);
    ok(await zincati(ts.url, 'pre-reboot', 'node-x', 'cli'));
    now += 5 * 60_000;
    const list = JSON.parse((await cli(['lock', 'list', '--json'])).stdout);
    const g = list.groups.find((x: { name: string }) => x.name === 'cli');
    assert.deepEqual(g.slots, 2);
    assert.equal(g.lease_ms, 30 * 60_000);
    assert.equal(g.holders.length, 1);
    assert.equal(g.holders[0].id, 'node-x');
    assert.equal(g.holders[0].left_ms, 25 * 60_000);
    const table = await cli(['lock', 'list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^cli\s+1\/2\s+30m\s+node-x\s+\S+\s+25m$/m);
    // Usage errors exit 2 before any request; the server's refusal exits 1.
    assert.equal((await cli(['lock', 'set', 'cli', '--slots', '0', '--lease', '30m'])).code, 2);
    assert.equal((await cli(['lock', 'set', 'cli', '--slots', '1', '--lease', 'soon'])).code, 2);
    assert.equal((await cli(['lock', 'set', 'bad group', '--slots', '1', '--lease', '1m'])).code, 2);
    const rel = await cli(['lock', 'release', 'cli', 'node-x', '--reason', 'node replaced']);
    assert.equal(rel.code, 0, rel.stderr);
    const again = await cli(['lock', 'release', 'cli', 'node-x']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /holds no slot/);
    const [e] = (await audit(ts, 'fleetlock.released')).filter((x) => x.subject === 'fleetlock/cli/node-x');
    assert.equal((e.detail as { reason: string }).reason, 'node replaced');
    assert.deepEqual(await holders(ts, 'cli'), []);
    const [setEntry] = (await audit(ts, 'fleetlock.group-set')).filter((x) => x.subject === 'fleetlock/cli');
    assert.deepEqual(setEntry.detail, { group: 'cli', slots: 2, lease_ms: 30 * 60_000 });
  });
});

describe('FleetLock restrictions', { timeout: 120_000 }, () => {
  it('is off unless enabled: 404 with a protocol error', async () => {
    const ts = await startTestServer();
    try {
      refused(await zincati(ts.url, 'pre-reboot', 'n', 'default'), 404, 'fleetlock_disabled');
    } finally {
      await ts.close();
    }
  });

  it('a shared secret header, an address allow-list, and the failed-request rate limit', async () => {
    const ts = await startTestServer({
      fleetLock: {
        enabled: true,
        secretHeader: { name: 'X-Fleetlock-Secret', value: 's3cret-value' },
        rateLimit: { failuresPerAddressPerMinute: 4 },
      },
    });
    try {
      refused(await zincati(ts.url, 'pre-reboot', 'n', 'default'), 401, 'unauthorized');
      refused(
        await zincati(ts.url, 'pre-reboot', 'n', 'default', {
          headers: { 'x-fleetlock-secret': 's3cret-valuE' },
        }),
        401,
        'unauthorized',
      );
      ok(
        await zincati(ts.url, 'pre-reboot', 'n', 'default', {
          headers: { 'x-fleetlock-secret': 's3cret-value' },
        }),
      );
      // Two more failures spend the budget of 4; from then on even the right secret waits.
      refused(await zincati(ts.url, 'pre-reboot', 'n', 'default'), 401, 'unauthorized');
      refused(
        await zincati(ts.url, 'pre-reboot', 'n', 'default', {
          noProtocolHeader: true,
          headers: { 'x-fleetlock-secret': 's3cret-value' },
        }),
        400,
        'invalid_protocol_header',
      );
      refused(await zincati(ts.url, 'pre-reboot', 'n', 'default'), 429, 'rate_limited');
      refused(
        await zincati(ts.url, 'steady-state', 'n', 'default', {
          headers: { 'x-fleetlock-secret': 's3cret-value' },
        }),
        429,
        'rate_limited',
      );
    } finally {
      await ts.close();
    }
    const outside = await startTestServer({
      fleetLock: { enabled: true, allowFrom: ['10.0.0.0/8', 'fd00::/8'] },
    });
    const inside = await startTestServer({
      fleetLock: { enabled: true, allowFrom: ['10.0.0.0/8', '127.0.0.0/8'] },
    });
    try {
      refused(await zincati(outside.url, 'pre-reboot', 'n', 'default'), 403, 'forbidden_address');
      ok(await zincati(inside.url, 'pre-reboot', 'n', 'default'));
    } finally {
      await outside.close();
      await inside.close();
    }
  });

  it('server.yaml fleet_lock: defaults, durations, CIDRs and the secret file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-fleetlock-'));
    try {
      const first = fleetLockOf(loadServerConfig(dir).config, dir);
      assert.deepEqual(first, {
        enabled: false,
        defaultSlots: 1,
        defaultLeaseMs: 30 * 60_000,
        allowFrom: [],
        secretHeader: undefined,
        rateLimit: { perAddressPerMinute: 30, perIdPerMinute: 6, failuresPerAddressPerMinute: 10 },
      });
      writeFileSync(join(dir, 'fl-secret'), 'abc123\n');
      writeFileSync(
        join(dir, 'server.yaml'),
        'fleet_lock:\n  enabled: true\n  default_slots: 3\n  default_lease: 1h30m\n  allow_from: [10.0.0.0/8]\n' +
          '  secret_header: {name: x-fl, value_file: fl-secret}\n  rate_limit: {per_address: 600, per_id: 2}\n',
      );
      assert.deepEqual(fleetLockOf(loadServerConfig(dir).config, dir), {
        enabled: true,
        defaultSlots: 3,
        defaultLeaseMs: 90 * 60_000,
        allowFrom: ['10.0.0.0/8'],
        secretHeader: { name: 'x-fl', value: 'abc123' },
        rateLimit: { perAddressPerMinute: 600, perIdPerMinute: 2, failuresPerAddressPerMinute: 10 },
      });
      writeFileSync(join(dir, 'server.yaml'), 'fleet_lock:\n  rate_limit: {per_id: 0}\n');
      assert.throws(() => loadServerConfig(dir), /rate_limit/);
      writeFileSync(join(dir, 'server.yaml'), 'fleet_lock:\n  rate_limit: {per_minute: 5}\n');
      assert.throws(() => loadServerConfig(dir), /per_minute/);
      writeFileSync(join(dir, 'server.yaml'), 'fleet_lock:\n  allow_from: [10.0.0.0/40]\n');
      assert.throws(() => loadServerConfig(dir), /allow_from[\s\S]*invalid address or CIDR/);
      writeFileSync(join(dir, 'server.yaml'), 'fleet_lock:\n  default_lease: soon\n');
      assert.throws(() => loadServerConfig(dir), /default_lease[\s\S]*invalid duration/);
      writeFileSync(
        join(dir, 'server.yaml'),
        'fleet_lock:\n  secret_header: {name: x-fl, value_file: missing}\n',
      );
      assert.throws(() => fleetLockOf(loadServerConfig(dir).config, dir), /cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('FleetLock under a flood of unauthenticated requests', { timeout: 120_000 }, () => {
  const fleetlockAudit = async (ts: TestServer) =>
    (await listAudit(ts.srv.ctx.store.db, { limit: 1000 })).filter((e) => e.action.startsWith('fleetlock.'));

  it('limits every request per address, answered or not, with the protocol error and Retry-After', async () => {
    let now = 1_750_000_000_000;
    const ts = await startTestServer({
      clock: () => now,
      fleetLock: { enabled: true, rateLimit: { perAddressPerMinute: 4, perIdPerMinute: 100 } },
    });
    try {
      ok(await zincati(ts.url, 'pre-reboot', 'a', 'default'));
      ok(await zincati(ts.url, 'steady-state', 'a', 'default'));
      ok(await zincati(ts.url, 'steady-state', 'b', 'default'));
      ok(await zincati(ts.url, 'steady-state', 'c', 'default'));
      const written = (await fleetlockAudit(ts)).length;
      const over = await zincati(ts.url, 'pre-reboot', 'd', 'default');
      refused(over, 429, 'rate_limited');
      assert.equal(over.retryAfter, '15', 'four a minute: the next token in 15 s');
      // A request that would be refused anyway spends nothing more: it is turned away first.
      refused(
        await zincati(ts.url, 'pre-reboot', 'd', 'default', { noProtocolHeader: true }),
        429,
        'rate_limited',
      );
      assert.equal((await fleetlockAudit(ts)).length, written, 'nothing written while over the rate');
      assert.deepEqual(await holders(ts, 'default'), []);
      now += 15_000;
      ok(await zincati(ts.url, 'pre-reboot', 'd', 'default'));
      refused(await zincati(ts.url, 'steady-state', 'd', 'default'), 429, 'rate_limited');
    } finally {
      await ts.close();
    }
  });

  it('limits a node id looping pre-reboot / steady-state (its audit rows are bounded)', async () => {
    let now = 1_750_000_000_000;
    const ts = await startTestServer({
      clock: () => now,
      fleetLock: { enabled: true, rateLimit: { perAddressPerMinute: 100, perIdPerMinute: 4 } },
    });
    try {
      for (let i = 0; i < 2; i++) {
        ok(await zincati(ts.url, 'pre-reboot', 'looper', 'default'));
        ok(await zincati(ts.url, 'steady-state', 'looper', 'default'));
      }
      for (let i = 0; i < 5; i++)
        refused(await zincati(ts.url, 'pre-reboot', 'looper', 'default'), 429, 'rate_limited');
      // Another node is not held back by the looping one.
      ok(await zincati(ts.url, 'pre-reboot', 'calm', 'default'));
      assert.deepEqual(await holders(ts, 'default'), ['calm']);
      const looper = (await fleetlockAudit(ts)).filter((e) => e.subject === 'fleetlock/default/looper');
      assert.deepEqual(looper.map((e) => e.action).sort(), [
        'fleetlock.locked',
        'fleetlock.locked',
        'fleetlock.unlocked',
        'fleetlock.unlocked',
      ]);
      now += 15_000;
      refused(await zincati(ts.url, 'pre-reboot', 'looper', 'default'), 409, 'failed_lock_semaphore_full');
    } finally {
      await ts.close();
    }
  });

  it('counts refusals (unknown groups too) in a budget of its own, apart from device and admin logins', async () => {
    let now = 1_750_000_000_000;
    const secret = { 'x-fleetlock-secret': 'right' };
    const ts = await startTestServer({
      clock: () => now,
      fleetLock: {
        enabled: true,
        secretHeader: { name: 'X-Fleetlock-Secret', value: 'right' },
        rateLimit: { failuresPerAddressPerMinute: 3 },
      },
      limits: { failedAuthBurst: 2, failedAuthPerIpPerMinute: 1 },
    });
    try {
      const badAdmin = async () => (await callAs(ts.url, 'GET', '/v1/admin/locks', 'not-a-token')).status;
      refused(await zincati(ts.url, 'pre-reboot', 'n', 'default'), 401, 'unauthorized');
      refused(
        await zincati(ts.url, 'pre-reboot', 'n', 'default', { headers: { 'x-fleetlock-secret': 'wrong' } }),
        401,
        'unauthorized',
      );
      // FleetLock's refusals did not spend the login budget (2): the admin API still answers 401 twice.
      assert.deepEqual([await badAdmin(), await badAdmin(), await badAdmin()], [401, 401, 429]);
      // And a spent login budget does not shut FleetLock out.
      ok(await zincati(ts.url, 'pre-reboot', 'n', 'default', { headers: secret }));
      // Probing group names is a refusal like a wrong secret: the third spends the budget of 3.
      refused(
        await zincati(ts.url, 'pre-reboot', 'n', 'no-such-group', { headers: secret }),
        400,
        'unknown_group',
      );
      const out = await zincati(ts.url, 'steady-state', 'n', 'default', { headers: secret });
      refused(out, 429, 'rate_limited');
      assert.equal(out.retryAfter, '20');
      now += 20_000;
      ok(await zincati(ts.url, 'steady-state', 'n', 'default', { headers: secret }));
    } finally {
      await ts.close();
    }
  });

  it('answers what changes nothing without a write: works while another connection holds the write lock', async () => {
    const ts = await startTestServer({ fleetLock: { enabled: true, sweepMs: 3_600_000 } });
    const db = new SQLite(join(ts.dir, 'server', 'ringfence.db'));
    try {
      // Before "default" exists, steady-state does not create it.
      ok(await zincati(ts.url, 'steady-state', 'early', 'default'));
      assert.equal((await lockGroupRows(ts)).length, 0);
      ok(await zincati(ts.url, 'pre-reboot', 'holder', 'default'));
      db.exec('BEGIN IMMEDIATE');
      try {
        ok(await zincati(ts.url, 'steady-state', 'someone', 'default'));
        ok(await zincati(ts.url, 'pre-reboot', 'holder', 'default'));
        refused(await zincati(ts.url, 'pre-reboot', 'someone', 'default'), 409, 'failed_lock_semaphore_full');
        refused(await zincati(ts.url, 'steady-state', 'someone', 'nope'), 400, 'unknown_group');
      } finally {
        db.exec('ROLLBACK');
      }
      ok(await zincati(ts.url, 'steady-state', 'holder', 'default'));
      assert.deepEqual(await holders(ts, 'default'), []);
    } finally {
      db.close();
      await ts.close();
    }
  });

  it('warns at start when FleetLock is on for any address without a secret', async () => {
    const starts = [
      { fleetLock: { enabled: true }, warns: true },
      { fleetLock: { enabled: true, allowFrom: ['127.0.0.0/8'] }, warns: false },
      { fleetLock: { enabled: true, secretHeader: { name: 'x-s', value: 'v' } }, warns: false },
      { fleetLock: { enabled: false }, warns: false },
    ];
    for (const { fleetLock, warns } of starts) {
      const lines: string[] = [];
      const ts = await startTestServer({
        fleetLock,
        logger: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }),
      });
      await ts.close();
      const warned = lines.some((l) =>
        /FleetLock is enabled for any address without a secret header/.test(l),
      );
      assert.equal(warned, warns, `${JSON.stringify(fleetLock)}: ${lines.join('')}`);
    }
  });
});

const skip = pgBinDir() ? false : 'PostgreSQL is not installed (CI installs it)';

describe('FleetLock on PostgreSQL: replicas racing for the last slot', { skip, timeout: 300_000 }, () => {
  let pg: PgCluster;
  let a: TestServer;
  let b: TestServer;
  before(async () => {
    pg = await startPostgres();
    a = await startTestServer({ databaseUrl: pg.url, fleetLock: { enabled: true, rateLimit: UNLIMITED } });
    b = await startTestServer({ databaseUrl: pg.url, fleetLock: { enabled: true, rateLimit: UNLIMITED } });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    pg?.stop();
  });

  it('never lets two replicas both give away the last slot', async () => {
    await setGroup(a, 'race', 3, 60_000);
    for (let round = 0; round < 5; round++) {
      ok(await zincati(a.url, 'pre-reboot', `held-1-${round}`, 'race'));
      ok(await zincati(b.url, 'pre-reboot', `held-2-${round}`, 'race'));
      // One slot left; 24 nodes ask at once, half through each replica.
      const asks = Array.from({ length: 24 }, (_, i) =>
        zincati(i % 2 ? a.url : b.url, 'pre-reboot', `racer-${round}-${i}`, 'race'),
      );
      const answers = await Promise.all(asks);
      const won = answers.filter((x) => x.status === 200);
      assert.equal(won.length, 1, answers.map((x) => `${x.status} ${x.body}`).join('\n'));
      for (const x of answers) if (x.status !== 200) refused(x, 409, 'failed_lock_semaphore_full');
      const list = await holders(b, 'race', a.conn.token);
      assert.equal(list.length, 3, list.join(' '));
      for (const id of list) ok(await zincati(id.length % 2 ? a.url : b.url, 'steady-state', id, 'race'));
      assert.deepEqual(await holders(a, 'race'), []);
    }
    // The "default" group is created by whichever replica comes first, also when both come at once.
    const both = await Promise.all([
      zincati(a.url, 'pre-reboot', 'first-a', 'default'),
      zincati(b.url, 'pre-reboot', 'first-b', 'default'),
    ]);
    assert.deepEqual(both.map((x) => x.status).sort(), [200, 409]);
  });
});
