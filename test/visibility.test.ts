// Why did a device fail? A rollout's devices and a device's history with the health checks it reported, through the
// admin API (real server, devices speaking the real protocol) and the CLI (a real process against that server).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { api, type Conn } from '../src/cli/client.ts';
import { BIN } from '../src/demo/fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import type { DeviceHistoryPage, RolloutDevicesPage } from '../src/server/services/history-views.ts';
import { guardProcesses } from './helpers/processes.ts';
import {
  checkin,
  cycle,
  cycleUntil,
  enrollDevices,
  type ProtocolDevice,
  release,
  startRollout,
} from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const run = promisify(execFile);

const PLAN = `name: vis
first_wave_cap: 100
waves:
  - name: canary
    select: ring=canary
    size: 100%
    max_failures: 1
  - name: main
    select: ring=main
    size: 100%
`;

const ESC = '\u001b';
const SERVICE_OUTPUT = `starting sensor 1.1\n${ESC}[31mERROR${ESC}[0m: listen tcp :8443: address already in use\n`;
const LONG_OUTPUT = `${'x'.repeat(4000)}END-OF-LOG`;

const status = (conn: Conn, id: number) => api<RolloutView>(conn, 'GET', `/v1/admin/rollouts/${id}`);

async function get(ts: TestServer, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${ts.url}${path}`, { headers: { authorization: `Bearer ${ts.conn.token}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function enrollNamed(conn: Conn, token: string, name: string): Promise<string> {
  const res = await fetch(new URL('/v1/enroll', conn.server), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token, name, labels: { ring: 'spare' } }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { device_id: string }).device_id;
}

describe('per-device visibility', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let devs: ProtocolDevice[];
  let r1: number;
  let r2: number;
  let failed: ProtocolDevice;

  before(async () => {
    ts = await startTestServer();
    // Every device runs sensor 0.9 (a device that does not run the component is skipped by a rollout).
    devs = await enrollDevices(
      ts.conn,
      [{ ring: 'canary' }, { ring: 'canary' }, { ring: 'main' }, { ring: 'main' }],
      'sensor',
      '0.9',
    );
    failed = devs[1];
    await release(ts.conn, 'sensor', '1.0');
    await release(ts.conn, 'sensor', '1.1');
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: PLAN });

    // Rollout 1: every device installs 1.0.
    r1 = await startRollout(ts.conn, 'sensor@1.0', 'vis');
    await cycleUntil(ts.conn, devs, 'sensor', r1, (v) => v.status === 'completed', 'rollout 1 completed');

    // Rollout 2: one canary succeeds, the other fails its health checks and rolls back by itself.
    r2 = await startRollout(ts.conn, 'sensor@1.1', 'vis');
    await cycle(ts.conn, devs[0], 'sensor');
    const offers = await checkin(ts.conn, failed, 'sensor');
    assert.deepEqual(
      offers.map((o) => o.version),
      ['1.1'],
    );
    await checkin(ts.conn, failed, 'sensor', [
      {
        txn_id: `vis-${process.pid}-failed`,
        component: 'sensor',
        version: '1.1',
        from_version: '1.0',
        outcome: 'rolled-back',
        class: 'health',
        reason: 'service: address already in use; log-scan: END-OF-LOG',
        detail: {
          checks: [
            { name: 'service', ok: false, durationMs: 12, output: SERVICE_OUTPUT },
            { name: 'http', ok: true, durationMs: 3, output: 'HTTP 200' },
            { name: 'log-scan', ok: false, durationMs: 40, output: LONG_OUTPUT },
            { name: 'unclear', ok: 'yes', durationMs: -5 },
          ],
          attempts: 1,
        },
        at: Date.now(),
      },
    ]);
    // The failure is within the canary budget: the main wave starts; one device installs, one stays silent.
    await until(
      async () => {
        await cycle(ts.conn, devs[2], 'sensor');
        await checkin(ts.conn, devs[3], 'sensor');
        return status(ts.conn, r2);
      },
      (v) => v.waves[1].offered === 2 && v.waves[1].succeeded === 1,
      120_000,
      'main wave of rollout 2 offered',
    );
  });

  after(async () => {
    await ts?.close();
  });

  it("lists a rollout's devices with the failed device's checks and output", async () => {
    const page = await api<RolloutDevicesPage>(ts.conn, 'GET', `/v1/admin/rollouts/${r2}/devices`);
    assert.deepEqual(page.rollout, {
      id: r2,
      component: 'sensor',
      version: '1.1',
      plan: 'vis',
      status: 'running',
    });
    assert.equal(page.total, 4);
    assert.deepEqual(page.states, { succeeded: 2, failed: 1, offered: 1 });
    assert.equal(page.next_offset, null);
    assert.deepEqual(
      page.devices.map((d) => [d.name, d.wave.name, d.state]),
      [
        [devs[0].name, 'canary', 'succeeded'],
        [devs[1].name, 'canary', 'failed'],
        [devs[2].name, 'main', 'succeeded'],
        [devs[3].name, 'main', 'offered'],
      ],
    );
    const d = page.devices[1];
    assert.equal(d.device_id, failed.id);
    assert.deepEqual(d.wave, { index: 0, name: 'canary' });
    assert.equal(d.from_version, '1.0');
    assert.equal(d.to_version, '1.1');
    assert.equal(d.class, 'health');
    assert.match(d.reason ?? '', /address already in use/);
    assert.ok(d.report);
    assert.equal(d.report.outcome, 'rolled-back');
    assert.equal(d.report.attempts, 1);
    const [service, http, logScan, unclear] = d.report.checks;
    assert.deepEqual(service, {
      name: 'service',
      result: 'failed',
      duration_ms: 12,
      output: SERVICE_OUTPUT, // exact: the API is JSON; terminals and pages escape it themselves
      output_truncated: false,
    });
    assert.equal(http.result, 'ok');
    assert.equal(logScan.result, 'failed');
    assert.equal(logScan.output.length, 2000, 'output excerpts are bounded');
    assert.ok(logScan.output.endsWith('END-OF-LOG'), 'the end of the output is kept');
    assert.equal(logScan.output_truncated, true);
    assert.deepEqual(unclear, {
      name: 'unclear',
      result: 'failed', // an unclear result is a failure
      duration_ms: null,
      output: '',
      output_truncated: false,
    });
    // A device that succeeded shows its report without a failure; the silent one has none yet.
    assert.equal(page.devices[0].class, null);
    assert.equal(page.devices[0].report?.outcome, 'succeeded');
    assert.equal(page.devices[3].report, null);
    assert.equal(page.devices[3].reason, null);
  });

  it('filters by state and pages with a total', async () => {
    const onlyFailed = await api<RolloutDevicesPage>(
      ts.conn,
      'GET',
      `/v1/admin/rollouts/${r2}/devices?state=failed`,
    );
    assert.equal(onlyFailed.total, 1);
    assert.deepEqual(
      onlyFailed.devices.map((d) => d.name),
      [failed.name],
    );
    const ok = await api<RolloutDevicesPage>(
      ts.conn,
      'GET',
      `/v1/admin/rollouts/${r2}/devices?state=succeeded`,
    );
    assert.deepEqual(
      ok.devices.map((d) => d.name),
      [devs[0].name, devs[2].name],
    );
    const none = await api<RolloutDevicesPage>(
      ts.conn,
      'GET',
      `/v1/admin/rollouts/${r2}/devices?state=reverted`,
    );
    assert.deepEqual([none.total, none.devices.length, none.next_offset], [0, 0, null]);

    const seen: string[] = [];
    let offset: number | null = 0;
    let pages = 0;
    while (offset !== null) {
      const p: RolloutDevicesPage = await api<RolloutDevicesPage>(
        ts.conn,
        'GET',
        `/v1/admin/rollouts/${r2}/devices?limit=3&offset=${offset}`,
      );
      assert.equal(p.total, 4);
      assert.equal(p.limit, 3);
      seen.push(...p.devices.map((d) => d.name));
      offset = p.next_offset;
      pages++;
    }
    assert.equal(pages, 2);
    assert.deepEqual(
      seen,
      devs.map((d) => d.name),
    );
    const past = await api<RolloutDevicesPage>(ts.conn, 'GET', `/v1/admin/rollouts/${r2}/devices?offset=10`);
    assert.deepEqual([past.total, past.devices.length, past.next_offset], [4, 0, null]);
  });

  it("shows a device's transactions across two rollouts, newest first", async () => {
    const h = await api<DeviceHistoryPage>(ts.conn, 'GET', `/v1/admin/devices/${failed.name}/history`);
    assert.equal(h.device.id, failed.id);
    assert.deepEqual(h.device.labels, { ring: 'canary' });
    assert.equal(h.total, 2);
    assert.deepEqual(
      h.transactions.map((t) => [t.rollout?.id, t.kind, t.version, t.outcome, t.class]),
      [
        [r2, 'update', '1.1', 'rolled-back', 'health'],
        [r1, 'update', '1.0', 'succeeded', null],
      ],
    );
    const t = h.transactions[0];
    assert.equal(t.rollout?.wave.name, 'canary');
    assert.equal(t.rollout?.state, 'failed');
    assert.equal(t.rollout?.from_version, '1.0');
    assert.equal(t.checks[0].output, SERVICE_OUTPUT);
    assert.equal(t.checks[2].output.length, 2000);
    assert.deepEqual(
      h.assignments.map((a) => [a.id, a.state]),
      [
        [r2, 'failed'],
        [r1, 'succeeded'],
      ],
    );

    // By id as well, and paged.
    const p1 = await api<DeviceHistoryPage>(ts.conn, 'GET', `/v1/admin/devices/${failed.id}/history?limit=1`);
    assert.deepEqual([p1.total, p1.transactions.length, p1.next_offset], [2, 1, 1]);
    assert.equal(p1.transactions[0].rollout?.id, r2);
    const p2 = await api<DeviceHistoryPage>(
      ts.conn,
      'GET',
      `/v1/admin/devices/${failed.id}/history?limit=1&offset=1`,
    );
    assert.deepEqual([p2.transactions.length, p2.next_offset], [1, null]);
    assert.equal(p2.transactions[0].rollout?.id, r1);

    // The silent device: one transaction, and its open place in rollout 2.
    const silent = await api<DeviceHistoryPage>(ts.conn, 'GET', `/v1/admin/devices/${devs[3].id}/history`);
    assert.deepEqual(
      silent.transactions.map((x) => x.rollout?.id),
      [r1],
    );
    assert.deepEqual(
      silent.assignments.map((a) => [a.id, a.state]),
      [
        [r2, 'offered'],
        [r1, 'succeeded'],
      ],
    );
  });

  it('answers 404 for unknown rollouts and devices, 409 for an ambiguous name, 400 for bad input', async () => {
    assert.equal((await get(ts, '/v1/admin/rollouts/999999/devices')).status, 404);
    const nope = await get(ts, '/v1/admin/devices/no-such-device/history');
    assert.equal(nope.status, 404);
    assert.equal(nope.body.error, 'not_found');

    // Two retired devices carried the name "twin": ambiguous. A live "twin" is the one meant.
    const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: 3 });
    for (let i = 0; i < 2; i++) {
      const id = await enrollNamed(ts.conn, tok.token, 'twin');
      await api(ts.conn, 'POST', `/v1/admin/devices/${id}/retire`, {});
    }
    const twin = await get(ts, '/v1/admin/devices/twin/history');
    assert.equal(twin.status, 409);
    assert.match(String(twin.body.message), /use a device id/);
    const live = await enrollNamed(ts.conn, tok.token, 'twin');
    const h = await get(ts, '/v1/admin/devices/twin/history');
    assert.equal(h.status, 200);
    assert.equal((h.body as unknown as DeviceHistoryPage).device.id, live);

    for (const q of [
      'limit=0',
      'limit=1001',
      'limit=1e400',
      'limit=1e20',
      'limit=abc',
      'limit=1.5',
      'offset=-1',
      'offset=1e400',
      'offset=1e300',
      'state=bogus',
    ]) {
      const res = await get(ts, `/v1/admin/rollouts/${r2}/devices?${q}`);
      assert.equal(res.status, 400, `${q} answered ${res.status}`);
      assert.equal(typeof res.body.message, 'string', q); // one {error, message} answer
    }
    for (const id of ['abc', '0', '1e400', '-1']) {
      assert.equal((await get(ts, `/v1/admin/rollouts/${id}/devices`)).status, 400, `rollout id ${id}`);
    }
    for (const q of ['limit=1e400', 'offset=1e400', 'limit=0']) {
      assert.equal((await get(ts, `/v1/admin/devices/${failed.id}/history?${q}`)).status, 400, q);
    }
    const long = (await get(ts, `/v1/admin/devices/${'n'.repeat(201)}/history`)).status;
    assert.ok(long === 400 || long === 414, `an over-long device name answered ${long}`);
    // Both need the admin token.
    assert.equal((await fetch(`${ts.url}/v1/admin/rollouts/${r2}/devices`)).status, 401);
    assert.equal((await fetch(`${ts.url}/v1/admin/devices/${failed.id}/history`)).status, 401);
  });

  it('publishes both endpoints in the OpenAPI document', async () => {
    const doc = (await (await fetch(`${ts.url}/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { parameters: Array<{ name: string }> }>>;
    };
    assert.ok(doc.paths['/v1/admin/rollouts/{id}/devices']?.get);
    assert.ok(doc.paths['/v1/admin/devices/{id}/history']?.get);
    assert.deepEqual(
      doc.paths['/v1/admin/rollouts/{id}/devices'].get.parameters.map((p) => p.name).slice(0, 1),
      ['id'],
    );
  });

  async function cli(args: string[]) {
    const env = { ...process.env, RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    try {
      const r = await run(process.execPath, [BIN, ...args], { env });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  }

  it('ringfence rollout devices prints the table and the failing checks, terminal-safe', async () => {
    const r = await cli(['rollout', 'devices', String(r2), '--state', 'failed']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(ESC), 'no raw escape reaches the terminal');
    const lines = r.stdout.split('\n');
    assert.match(lines[0], new RegExp(`rollout ${r2}: sensor@1\\.1 via vis — running; 1 failed`));
    assert.match(lines[1], /^DEVICE\s+WAVE\s+STATE\s+FROM → TO\s+CLASS\s+REASON$/);
    assert.match(
      lines[2],
      new RegExp(`^${failed.name}\\s+1:canary\\s+failed\\s+1\\.0 → 1\\.1\\s+health\\s+service:`),
    );
    assert.match(r.stdout, /✗ service \(12 ms\)/);
    assert.match(r.stdout, /\| \\x1b\[31mERROR\\x1b\[0m: listen tcp :8443: address already in use/);
    assert.match(r.stdout, /✗ log-scan \(40 ms\)\n\s+…\n\s+\| …x{200,}END-OF-LOG\n/);
    assert.match(r.stdout, /✗ unclear\n/);
    assert.ok(!/✗ http/.test(r.stdout), 'passing checks are not listed');

    const all = await cli(['rollout', 'devices', String(r2), '--limit', '1', '--all', '--json']);
    assert.equal(all.code, 0, all.stderr);
    const parsed = JSON.parse(all.stdout) as RolloutDevicesPage;
    assert.equal(parsed.devices.length, 4);
    assert.equal(parsed.devices[1].report?.checks[0].output, SERVICE_OUTPUT, '--json keeps the exact text');

    const paged = await cli(['rollout', 'devices', String(r2), '--limit', '2']);
    assert.match(paged.stdout, /showing 1–2 of 4; next page: --offset 2/);

    const missing = await cli(['rollout', 'devices', '999999']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^ringfence: .*404 no rollout 999999\n$/);
    const bad = await cli(['rollout', 'devices', String(r2), '--state', 'broken']);
    assert.equal(bad.code, 2, 'a bad flag value is a usage error');
    assert.match(bad.stderr, /--state must be one of/);
  });

  it('ringfence fleet history lists the transactions across rollouts', async () => {
    const r = await cli(['fleet', 'history', failed.name]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(ESC));
    assert.match(r.stdout, new RegExp(`^${failed.name} \\(${failed.id}\\): 2 transactions`));
    const rows = r.stdout.split('\n').filter((l) => /sensor@/.test(l));
    assert.equal(rows.length, 2);
    assert.match(
      rows[0],
      new RegExp(`${r2} \\(update\\)\\s+canary\\s+sensor@1\\.1\\s+rolled-back\\s+health`),
    );
    assert.match(rows[1], new RegExp(`${r1} \\(update\\)\\s+canary\\s+sensor@1\\.0\\s+succeeded`));
    assert.match(r.stdout, /\\x1b\[31mERROR/);

    const silent = await cli(['fleet', 'history', devs[3].id]);
    assert.match(silent.stdout, /rollouts without a report from this device:/);
    assert.match(silent.stdout, new RegExp(`\\n${r2}\\s+sensor@1\\.1\\s+main\\s+offered`));

    const j = await cli(['fleet', 'history', failed.id, '--json']);
    const h = JSON.parse(j.stdout) as DeviceHistoryPage;
    assert.deepEqual(
      h.transactions.map((t) => t.rollout?.id),
      [r2, r1],
    );
    const twin = await cli(['fleet', 'history', 'no-such-device']);
    assert.equal(twin.code, 1);
    assert.match(twin.stderr, /404 no device no-such-device/);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
