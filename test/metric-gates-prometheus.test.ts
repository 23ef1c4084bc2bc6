// Metric gates against a real Prometheus (/usr/bin/prometheus, Debian's package) on loopback, scraping a small
// exporter this test serves: a wave whose gate holds passes; a metric that rises during the bake halts and rolls
// back with the query, value and threshold in the audit entry and the status; a Prometheus killed mid-wave
// halts the rollout as inconclusive, without rolling back.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { api } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { cycleUntil, enrollDevices, release, startRollout } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const PROMETHEUS = '/usr/bin/prometheus';
const BIN = new URL('../bin/ringfence.js', import.meta.url).pathname;
const run = promisify(execFile);
const QUERY = 'max(ringfence_test_error_ratio)';

/** A plan for the devices labelled set=SET: one gated canary wave of 2 baking BAKE, then the rest. */
const plan = (name: string, set: string, bake: string, onFailure = 'halt') => `name: ${name}
on_failure: ${onFailure}
first_wave_cap: 100%
report_deadline: 60s
waves:
  - name: canary
    select: set=${set}
    size: 2
    bake: ${bake}
    metrics:
      - name: error-ratio
        query: '${QUERY}'
        comparison: '<'
        threshold: 0.05
        interval: 5s
  - name: rest
    select: set=${set}
    size: 100%
`;

/** A free loopback port (taken and released; Prometheus binds it right after). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

describe('metric gates on a real Prometheus', { timeout: 180_000 }, () => {
  let dir: string;
  let exporter: Server;
  let errorRatio = 0.01;
  let prom: ChildProcess | null = null;
  let promUrl: string;
  let ts: TestServer;

  /** The value Prometheus answers for the gate's query, or null. */
  const promValue = async (): Promise<number | null> => {
    try {
      const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(QUERY)}`);
      const b = (await res.json()) as { data?: { result?: Array<{ value: [number, string] }> } };
      const v = b.data?.result?.[0]?.value[1];
      return v === undefined ? null : Number(v);
    } catch {
      return null;
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-prom-'));
    exporter = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(`# TYPE ringfence_test_error_ratio gauge\nringfence_test_error_ratio ${errorRatio}\n`);
    });
    await new Promise<void>((r) => exporter.listen(0, '127.0.0.1', r));
    const exporterPort = (exporter.address() as AddressInfo).port;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: ringfence-test\n    static_configs:\n      - targets: ['127.0.0.1:${exporterPort}']\n`,
    );
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prom = spawnGroup(
      PROMETHEUS,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        // Short staleness is not settable; a short lookback makes a stopped value disappear within seconds.
        '--query.lookback-delta=5s',
      ],
      { stdio: 'ignore' },
    );
    await until(
      () =>
        fetch(`${promUrl}/-/ready`).then(
          (r) => r.status,
          () => 0,
        ),
      (s) => s === 200,
      30_000,
      'Prometheus ready',
    );
    await until(promValue, (v) => v === 0.01, 30_000, 'Prometheus scraped the exporter');
    ts = await startTestServer({
      prometheus: { url: promUrl, timeoutMs: 2000, headers: {} },
      // The scripted devices check in back to back.
      limits: { checkinBurst: 100_000, checkinsPerDevicePerMinute: 100_000 },
    });
    for (const [name, set, bake, onFailure] of [
      ['gate-ok', 'a', '8s', 'halt'],
      ['gate-breach', 'b', '60s', 'halt-and-rollback'],
      ['gate-dead', 'c', '60s', 'halt-and-rollback'],
    ])
      await api(ts.conn, 'POST', '/v1/admin/plans', { source: plan(name, set, bake, onFailure) });
    // One component per test: a component has one active rollout at a time.
    for (const c of ['app-a', 'app-b', 'app-c']) await release(ts.conn, c, '2');
  });

  after(async () => {
    await killProcess(prom);
    await ts?.close();
    await new Promise((r) => exporter?.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const gate = (r: RolloutView) => {
    assert.equal(r.metric_gates.length, 1);
    return r.metric_gates[0];
  };

  it('passes a wave whose gate holds, and shows the reading', async () => {
    const devs = await enrollDevices(
      ts.conn,
      [1, 2, 3].map(() => ({ set: 'a' })),
      'app-a',
      '1',
    );
    const id = await startRollout(ts.conn, 'app-a@2', 'gate-ok');
    const end = await cycleUntil(
      ts.conn,
      devs,
      'app-a',
      id,
      (r) => r.status === 'completed' || r.status === 'halted',
      'gated rollout completes',
      60_000,
    );
    assert.equal(end.status, 'completed', end.state.reason ?? '');
    const g = gate(end);
    assert.deepEqual(
      [g.wave, g.name, g.query, g.comparison, g.threshold, g.state, g.last_value],
      ['canary', 'error-ratio', QUERY, '<', 0.05, 'ok', 0.01],
    );
  });

  it('halts and rolls back when the metric rises during the bake, naming query, value and threshold', async () => {
    const devs = await enrollDevices(
      ts.conn,
      [1, 2, 3].map(() => ({ set: 'b' })),
      'app-b',
      '1',
    );
    const id = await startRollout(ts.conn, 'app-b@2', 'gate-breach');
    await cycleUntil(
      ts.conn,
      devs,
      'app-b',
      id,
      (r) => r.status === 'baking' && gate(r).state === 'ok',
      'baking',
    );
    errorRatio = 0.2;
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`),
      (r) => r.status !== 'baking',
      30_000,
      'breach halts',
    );
    // halt-and-rollback: the exposed devices are told to revert.
    assert.equal(end.status, 'rolling-back');
    assert.equal(end.exposed, 2, 'the rest wave never started');
    assert.match(
      end.state.reason ?? '',
      /metric gate error-ratio breached, query ".*ringfence_test_error_ratio.*" = 0\.2, must be < 0\.05/,
    );
    assert.deepEqual([gate(end).state, gate(end).last_value], ['breached', 0.2]);
    // `ringfence rollout status` shows the gate, its condition and the reading.
    // Asynchronous: the server answering it runs in this process.
    const cli = await run(process.execPath, [BIN, 'rollout', 'status', String(id)], {
      env: { ...process.env, CI: 'true', RINGFENCE_SERVER: ts.conn.server, RINGFENCE_TOKEN: ts.conn.token },
      timeout: 30_000,
    });
    assert.match(cli.stdout, /metric gates:/);
    assert.match(cli.stdout, /canary\s+error-ratio\s+breached\s+< 0\.05\s+0\.2\s/);
    type Entry = { action: string; detail: Record<string, unknown> };
    const audit = await api<Entry[]>(ts.conn, 'GET', `/v1/admin/audit?subject=rollout/${id}`);
    const entry = audit.find((e) => e.action === 'rollout.metric-gate');
    assert.ok(entry, 'a metric-gate audit entry');
    assert.equal(entry.detail.query, QUERY);
    assert.equal(entry.detail.value, 0.2);
    assert.equal(entry.detail.threshold, 0.05);
    assert.equal(entry.detail.comparison, '<');
    const halt = audit.find((e) => e.action === 'rollout.rolling-back');
    assert.match(String(halt?.detail.why), /= 0\.2, must be < 0\.05/);
  });

  it('halts without rolling back when Prometheus dies mid-wave (inconclusive)', async () => {
    errorRatio = 0.01;
    await until(promValue, (v) => v === 0.01, 30_000, 'the metric back to normal');
    const devs = await enrollDevices(
      ts.conn,
      [1, 2, 3].map(() => ({ set: 'c' })),
      'app-c',
      '1',
    );
    const id = await startRollout(ts.conn, 'app-c@2', 'gate-dead');
    await cycleUntil(
      ts.conn,
      devs,
      'app-c',
      id,
      (r) => r.status === 'baking' && gate(r).state === 'ok',
      'baking',
    );
    await killProcess(prom);
    prom = null;
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`),
      (r) => r.status !== 'baking',
      30_000,
      'inconclusive halt',
    );
    assert.equal(end.status, 'halted');
    assert.match(end.state.reason ?? '', /metric gate error-ratio inconclusive.*unreachable/);
    assert.equal(gate(end).state, 'inconclusive');
    assert.equal(gate(end).last_value, null);
    assert.equal(end.waves[0].reverted, 0);
  });
});

guardProcesses();
