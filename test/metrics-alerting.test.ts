// The metrics an operator alerts on, read from a real server's /metrics: a rollout driven to a halt by scripted
// devices, stale devices under a moved clock, lock and webhook gauges over real rows, the scrape cache; and the
// example alert rules and Grafana dashboard checked against what the server really exports (promtool when
// installed).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { KyselyPlugin } from 'kysely';
import { parse as parseYaml } from 'yaml';
import { api } from '../src/cli/client.ts';
import { parsePlan } from '../src/engine/plan.ts';
import {
  type Assignment,
  type DeviceView,
  newRollout,
  type RolloutState,
  step,
  type Transition,
} from '../src/engine/rollout.ts';
import { openStore } from '../src/server/db/database.ts';
import { encode } from '../src/server/db/json.ts';
import { createMetrics, haltReason } from '../src/server/metrics.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { checkin, enrollDevices, release, startRollout } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const RULES = join(ROOT, 'docs', 'examples', 'prometheus-alerts.yaml');
const DASHBOARD = join(ROOT, 'docs', 'examples', 'grafana-dashboard.json');

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format: every sample, and every metric family named by a TYPE line. */
function parseExposition(text: string): { samples: Sample[]; families: Set<string> } {
  const samples: Sample[] = [];
  const families = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      families.add(type[1]);
      if (type[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) families.add(type[1] + s);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { samples, families };
}

async function scrape(url: string): Promise<{ samples: Sample[]; families: Set<string> }> {
  const res = await fetch(new URL('/metrics', url));
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
function sampleValue(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

describe('alerting metrics of a real server', { timeout: 300_000 }, () => {
  let ts: TestServer;

  before(async () => {
    ts = await startTestServer();
  });
  after(() => ts.close());

  it('counts a halt by reason and shows the halted rollout and its wave devices', async () => {
    const devs = await enrollDevices(ts.conn, [{}, {}, {}], 'app', '1.0.0');
    await release(ts.conn, 'app', '2.0.0');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: 'name: gate\nfirst_wave_cap: 100%\nwaves:\n  - { name: all, size: 100%, max_failures: 0 }\n',
    });
    const before = await scrape(ts.url);
    assert.equal(sampleValue(before.samples, 'ringfence_halts_total', { reason: 'failure-budget' }), 0);
    assert.equal(sampleValue(before.samples, 'ringfence_rollouts', { status: 'halted' }), 0);

    const id = await startRollout(ts.conn, 'app@2.0.0', 'gate');
    for (const d of devs)
      await until(
        () => checkin(ts.conn, d, 'app'),
        (offers) => offers.some((o) => o.version === '2.0.0'),
        60_000,
        'offer',
      );
    await checkin(ts.conn, devs[0], 'app', [
      {
        txn_id: `t-metrics-${process.pid}`,
        component: 'app',
        version: '2.0.0',
        from_version: '1.0.0',
        outcome: 'failed',
        class: 'health',
        reason: 'health check failed',
      },
    ]);
    await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${id}`),
      (v) => v.status === 'halted',
      60_000,
      'halt',
    );
    // The gauges come from a cached reading (up to 5 s old): wait for one taken after the halt.
    const { samples } = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_rollouts', { status: 'halted' }) === 1,
      30_000,
      'halted gauge',
    );
    assert.equal(sampleValue(samples, 'ringfence_halts_total', { reason: 'failure-budget' }), 1);
    assert.equal(sampleValue(samples, 'ringfence_halts_total', { reason: 'operator' }), 0);
    assert.equal(sampleValue(samples, 'ringfence_rollouts', { status: 'running' }), 0);
    const wave = { rollout: String(id), wave: 'all' };
    assert.equal(sampleValue(samples, 'ringfence_wave_devices', { ...wave, state: 'failed' }), 1);
    assert.equal(sampleValue(samples, 'ringfence_wave_devices', { ...wave, state: 'offered' }), 2);
    assert.equal(sampleValue(samples, 'ringfence_wave_devices', { ...wave, state: 'succeeded' }), 0);
    assert.equal(sampleValue(samples, 'ringfence_devices'), 3);

    // Rolling back a rollout already halted is the same incident: not counted twice.
    await api(ts.conn, 'POST', `/v1/admin/rollouts/${id}/rollback`, { reason: 'bad release' });
    const after = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_rollouts', { status: 'halted' }) === 0,
      30_000,
      'rollback',
    );
    assert.equal(sampleValue(after.samples, 'ringfence_halts_total', { reason: 'failure-budget' }), 1);
    assert.equal(sampleValue(after.samples, 'ringfence_halts_total', { reason: 'operator' }), 0);
  });

  it('reports lock holders per group (unexpired leases only) and the pending webhook outbox', async () => {
    const db = ts.srv.ctx.store.db;
    const now = ts.srv.ctx.clock();
    await db
      .insertInto('lock_groups')
      .values([
        { name: 'default', slots: 2, lease_ms: 1_800_000, updated_at: now, updated_by: 'test' },
        { name: 'db', slots: 1, lease_ms: 1_800_000, updated_at: now, updated_by: 'test' },
      ])
      .execute();
    await db
      .insertInto('lock_holders')
      .values([
        { group_name: 'default', holder_id: 'n1', acquired_at: now, expires_at: now + 600_000 },
        { group_name: 'default', holder_id: 'n2', acquired_at: now, expires_at: now + 600_000 },
        { group_name: 'db', holder_id: 'old', acquired_at: now - 7_200_000, expires_at: now - 1 },
      ])
      .execute();
    const row = {
      webhook_id: 'w1',
      event: 'rollout.halted',
      payload: '{}',
      created_at: now,
      attempts: 0,
      next_attempt_at: now,
    };
    await db
      .insertInto('webhook_outbox')
      .values([
        { id: 'e1', ...row },
        { id: 'e2', ...row },
        { id: 'e3', ...row, delivered_at: now },
        { id: 'e4', ...row, failed_at: now },
      ])
      .execute();
    const { samples } = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_lock_slots', { group: 'default' }) === 2,
      30_000,
      'lock gauges',
    );
    assert.equal(sampleValue(samples, 'ringfence_lock_holders', { group: 'default' }), 2);
    assert.equal(
      sampleValue(samples, 'ringfence_lock_holders', { group: 'db' }),
      0,
      'an expired lease holds nothing',
    );
    assert.equal(sampleValue(samples, 'ringfence_lock_slots', { group: 'db' }), 1);
    assert.equal(sampleValue(samples, 'ringfence_webhook_outbox_pending'), 2);
    for (const result of ['delivered', 'retried', 'failed'])
      assert.equal(sampleValue(samples, 'ringfence_webhook_deliveries_total', { result }), 0);
  });

  it('the example rules and dashboard use only metrics the server exports', async () => {
    const { families } = await scrape(ts.url);
    const used = (expr: string) =>
      [...expr.matchAll(/\b((?:ringfence|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]);

    const rules = parseYaml(readFileSync(RULES, 'utf8')) as {
      groups: Array<{ rules: Array<{ alert: string; expr: string; annotations: Record<string, string> }> }>;
    };
    const alerts = rules.groups.flatMap((g) => g.rules);
    assert.ok(alerts.length >= 8);
    for (const r of alerts) {
      for (const name of used(r.expr)) assert.ok(families.has(name), `${r.alert} uses ${name}, not exported`);
      assert.ok(r.annotations.summary && r.annotations.description, `${r.alert} has summary and description`);
      const [doc, anchor] = r.annotations.runbook_url.split('#');
      const headings = readFileSync(join(ROOT, doc), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('#'))
        .map((l) =>
          l
            .replace(/^#+ /, '')
            .toLowerCase()
            .replace(/[^a-z0-9 -]/g, '')
            .replace(/ /g, '-'),
        );
      assert.ok(
        headings.includes(anchor),
        `${r.alert}: runbook ${r.annotations.runbook_url} names no section`,
      );
    }
    // Every gauge read from the database appears in some rule or panel, so none is exported for nothing.
    const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
      uid: string;
      templating: { list: Array<{ name: string; type: string; query: unknown }> };
      panels: Array<{
        type: string;
        title: string;
        datasource?: { uid: string };
        targets?: Array<{ expr: string }>;
      }>;
    };
    assert.ok(dash.uid);
    assert.ok(dash.templating.list.some((v) => v.type === 'datasource' && v.query === 'prometheus'));
    const exprs: string[] = alerts.map((r) => r.expr);
    for (const p of dash.panels.filter((x) => x.type !== 'row')) {
      assert.equal(p.datasource?.uid, '$' + '{datasource}', `panel ${p.title} uses the datasource variable`);
      assert.ok(p.targets?.length, `panel ${p.title} has queries`);
      for (const t of p.targets) {
        assert.ok(used(t.expr).length > 0, `panel ${p.title}: ${t.expr}`);
        for (const name of used(t.expr))
          assert.ok(families.has(name), `panel ${p.title} uses ${name}, not exported`);
        exprs.push(t.expr);
      }
    }
    const everyUse = new Set(exprs.flatMap(used));
    for (const name of [
      'ringfence_rollouts',
      'ringfence_wave_devices',
      'ringfence_devices_stale',
      'ringfence_halts_total',
      'ringfence_lock_holders',
      'ringfence_reports_dropped_total',
      'ringfence_webhook_deliveries_total',
      'ringfence_webhook_outbox_pending',
    ])
      assert.ok(everyUse.has(name), `${name} is used by a rule or a panel`);
  });
});

describe('stale devices', { timeout: 120_000 }, () => {
  let ts: TestServer;
  let skew = 0;

  // A long poll interval: stale means 3 minutes unseen, which only the moved clock reaches.
  before(async () => {
    ts = await startTestServer({ clock: () => Date.now() + skew, pollSeconds: 60 });
  });
  after(() => ts.close());

  it('counts devices not seen for 3 poll intervals, by the injected clock', async () => {
    const devs = await enrollDevices(ts.conn, [{}, {}, {}], 'app', '1.0.0');
    const fresh = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_devices') === 3,
      30_000,
      'enrolled devices',
    );
    assert.equal(sampleValue(fresh.samples, 'ringfence_devices_stale'), 0);
    skew = 3 * 60_000 + 20_000;
    await checkin(ts.conn, devs[0], 'app');
    const later = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_devices_stale') === 2,
      30_000,
      'two stale devices',
    );
    assert.equal(sampleValue(later.samples, 'ringfence_devices'), 3);
    // A retired device is not enrolled any more: neither counted nor stale.
    await api(ts.conn, 'POST', `/v1/admin/devices/${devs[1].id}/retire`, { reason: 'decommissioned' });
    const retired = await until(
      () => scrape(ts.url),
      (s) => sampleValue(s.samples, 'ringfence_devices') === 2,
      30_000,
      'retired device gone',
    );
    assert.equal(sampleValue(retired.samples, 'ringfence_devices_stale'), 1);
  });
});

describe('scrape cost', () => {
  it('serves scrapes within the cache time from one reading of the database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-metrics-'));
    const store = await openStore({ dataDir: dir });
    try {
      let queries = 0;
      const counting: KyselyPlugin = {
        transformQuery: (args) => {
          queries++;
          return args.node;
        },
        transformResult: async (args) => args.result,
      };
      const counted = { ...store, db: store.db.withPlugin(counting) };
      const m = createMetrics({ store: counted, clock: Date.now, pollSeconds: 30, cacheMs: 60_000 });
      await m.registry.metrics();
      const one = queries;
      assert.ok(one > 0, 'the first scrape reads the database');
      await Promise.all([m.registry.metrics(), m.registry.metrics()]);
      await m.registry.metrics();
      assert.equal(queries, one, 'scrapes within the cache time read nothing more');

      const fresh = createMetrics({ store: counted, clock: Date.now, pollSeconds: 30, cacheMs: 0 });
      queries = 0;
      await fresh.registry.metrics();
      await fresh.registry.metrics();
      assert.equal(queries, 2 * one, 'without a cache each scrape reads once, not once per gauge');
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('database gauges on PostgreSQL', {
  skip: pgBinDir() ? false : 'PostgreSQL is not installed (CI installs it)',
}, () => {
  let cluster: PgCluster;
  before(async () => {
    cluster = await startPostgres();
  });
  after(() => cluster?.stop());

  it('two replicas on one database report the same numbers (aggregate with max)', async () => {
    const dirs = [mkdtempSync(join(tmpdir(), 'rf-pg-a-')), mkdtempSync(join(tmpdir(), 'rf-pg-b-'))];
    const stores = [];
    try {
      for (const d of dirs) stores.push(await openStore({ dataDir: d, url: cluster.url }));
      const now = Date.now();
      const device = (id: string, seen: number) => ({
        id,
        name: id,
        token_hash: `h-${id}`,
        labels: encode({}),
        agent_version: 'test',
        enrolled_at: now,
        last_seen_at: seen,
        held: 0 as const,
        pins: encode({}),
        deferred_until: null,
        retired_at: null,
      });
      await stores[0].db
        .insertInto('devices')
        .values([device('p1', now), device('p2', now - 600_000)])
        .execute();
      await stores[0].db
        .insertInto('lock_holders')
        .values({ group_name: 'default', holder_id: 'n1', acquired_at: now, expires_at: now + 60_000 })
        .execute();
      const texts = [];
      for (const store of stores) {
        const m = createMetrics({ store, clock: () => now, pollSeconds: 60 });
        texts.push(parseExposition(await m.registry.metrics()).samples);
      }
      for (const samples of texts) {
        // PostgreSQL answers count(*) as int8 and sum() as numeric: both must reach Prometheus as numbers.
        assert.equal(sampleValue(samples, 'ringfence_devices'), 2);
        assert.equal(sampleValue(samples, 'ringfence_devices_stale'), 1);
        assert.equal(sampleValue(samples, 'ringfence_lock_holders', { group: 'default' }), 1);
        assert.equal(sampleValue(samples, 'ringfence_rollouts', { status: 'halted' }), 0);
      }
    } finally {
      for (const s of stores) await s.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('halt reasons', () => {
  /** Steps a rollout over `n` devices until it stops; `outcome` decides each offered device's report. */
  function transitions(plan: string, outcome: (i: number) => 'succeeded' | 'failed' | null): Transition[] {
    const p = parsePlan(plan);
    const devices: DeviceView[] = Array.from({ length: 4 }, (_, i) => ({
      id: `d${i}`,
      labels: {},
      held: false,
      pinned: false,
      busy: false,
      version: '1',
    }));
    let rollout: RolloutState = newRollout({
      id: 'r',
      component: 'c',
      version: '2',
      releaseCreatedAt: 0,
      now: 0,
    });
    const assignments = new Map<string, Assignment>();
    const all: Transition[] = [];
    let now = 0;
    for (
      let i = 0;
      i < 50 && !['halted', 'rolling-back', 'rolled-back', 'completed'].includes(rollout.status);
      i++
    ) {
      const out = step({ plan: p, rollout, assignments, devices, now });
      rollout = out.rollout;
      all.push(...out.transitions);
      for (const a of out.changed) assignments.set(a.deviceId, a);
      for (const a of assignments.values()) {
        const o = a.state === 'offered' ? outcome(Number(a.deviceId.slice(1))) : null;
        if (o) assignments.set(a.deviceId, { ...a, state: o, outcome: o, reportedAt: now });
      }
      now = out.wakeAt !== null ? Math.max(now + 1, out.wakeAt) : now + 1000;
    }
    return all;
  }
  const reasons = (ts: Transition[]) => ts.map(haltReason).filter((r) => r !== null);
  const wave = (extra: string) =>
    `name: t\nfirst_wave_cap: 100%\nreport_deadline: 1m\nwaves:\n  - { name: all, size: 100%, ${extra} }\n`;

  it('names the gate that stopped the engine', () => {
    assert.deepEqual(
      reasons(transitions(wave('max_failures: 0'), (i) => (i === 0 ? 'failed' : 'succeeded'))),
      ['failure-budget'],
    );
    assert.deepEqual(
      reasons(
        transitions(`on_failure: halt-and-rollback\n${wave('max_failures: 0')}`, (i) =>
          i === 0 ? 'failed' : 'succeeded',
        ),
      ),
      ['failure-budget'],
    );
    assert.deepEqual(
      reasons(
        transitions(wave('max_failures: 100%, min_success: 90%'), (i) => (i === 0 ? 'failed' : 'succeeded')),
      ),
      ['success-gate'],
    );
    // Silent devices fail at the report deadline: too little evidence for min_reported.
    assert.deepEqual(
      reasons(
        transitions(wave('max_failures: 100%, min_reported: 100%'), (i) => (i < 2 ? 'succeeded' : null)),
      ),
      ['min-reported'],
    );
    assert.deepEqual(reasons(transitions(wave('max_failures: 0'), () => 'succeeded')), []);
  });

  it('counts an operator rollback of a running rollout, not pauses or a rollback after a halt', () => {
    const t = (from: Transition['from'], to: Transition['to'], why: string): Transition => ({
      from,
      to,
      wave: 0,
      at: 0,
      why,
    });
    assert.equal(haltReason(t('running', 'rolling-back', 'rolled back by alice')), 'operator');
    assert.equal(haltReason(t('halted', 'rolling-back', 'rolled back by alice')), null);
    assert.equal(haltReason(t('running', 'paused', 'paused by alice')), null);
    assert.equal(haltReason(t('rolling-back', 'rolled-back', 'rolled back')), null);
  });
});

describe('example alert rules under promtool', { timeout: 60_000 }, () => {
  const promtool = (process.env.PATH ?? '')
    .split(delimiter)
    .map((d) => join(d, 'promtool'))
    .find((p) => existsSync(p));

  it('pass `promtool check rules`', {
    skip: promtool ? false : 'promtool is not installed (Debian package prometheus)',
  }, async () => {
    const { stdout } = await run(promtool!, ['check', 'rules', RULES]);
    assert.match(stdout, /SUCCESS: \d+ rules found/);
  });

  it('fire on the series they are meant for (`promtool test rules`)', {
    skip: promtool ? false : 'promtool is not installed (Debian package prometheus)',
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-promtool-'));
    const rules = parseYaml(readFileSync(RULES, 'utf8')) as {
      groups: Array<{ rules: Array<{ alert: string; annotations: Record<string, string> }> }>;
    };
    /** The annotations `alert` must carry, its templates replaced by what they render to here. */
    const annotations = (alert: string, rendered: Record<string, string>) => {
      const rule = rules.groups.flatMap((g) => g.rules).find((r) => r.alert === alert);
      assert.ok(rule, alert);
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(rule.annotations))
        out[k] = Object.entries(rendered).reduce((text, [t, r]) => text.replaceAll(t, r), v);
      return out;
    };
    try {
      const tests = {
        rule_files: [RULES],
        evaluation_interval: '1m',
        tests: [
          {
            interval: '1m',
            input_series: [
              // Two replicas on one database report the same gauges: max(), not sum(), gives one halted rollout.
              {
                series: 'ringfence_rollouts{job="ringfence",instance="a",status="halted"}',
                values: '0 1x10',
              },
              {
                series: 'ringfence_rollouts{job="ringfence",instance="b",status="halted"}',
                values: '0 1x10',
              },
              { series: 'ringfence_devices{job="ringfence",instance="a"}', values: '100x30' },
              { series: 'ringfence_devices_stale{job="ringfence",instance="a"}', values: '10x30' },
              { series: 'ringfence_lock_holders{job="ringfence",instance="a",group="db"}', values: '1x200' },
              { series: 'ringfence_lock_slots{job="ringfence",instance="a",group="db"}', values: '1x200' },
              { series: 'up{job="ringfence",instance="a"}', values: '1x200' },
            ],
            alert_rule_test: [
              {
                eval_time: '5m',
                alertname: 'RingfenceRolloutHalted',
                exp_alerts: [
                  {
                    exp_labels: { severity: 'critical' },
                    exp_annotations: annotations('RingfenceRolloutHalted', { '{{ $value }}': '1' }),
                  },
                ],
              },
              { eval_time: '10m', alertname: 'RingfenceDevicesStale', exp_alerts: [] },
              {
                eval_time: '20m',
                alertname: 'RingfenceDevicesStale',
                exp_alerts: [
                  {
                    exp_labels: { severity: 'warning' },
                    exp_annotations: annotations('RingfenceDevicesStale', {
                      '{{ $value | humanizePercentage }}': '10%',
                    }),
                  },
                ],
              },
              { eval_time: '100m', alertname: 'RingfenceLockAtCapacity', exp_alerts: [] },
              {
                eval_time: '150m',
                alertname: 'RingfenceLockAtCapacity',
                exp_alerts: [
                  {
                    exp_labels: { severity: 'warning', group: 'db' },
                    exp_annotations: annotations('RingfenceLockAtCapacity', { '{{ $labels.group }}': 'db' }),
                  },
                ],
              },
              { eval_time: '150m', alertname: 'RingfenceServerDown', exp_alerts: [] },
              { eval_time: '150m', alertname: 'RingfenceScrapeAbsent', exp_alerts: [] },
            ],
          },
        ],
      };
      const file = join(dir, 'tests.yaml');
      // JSON is YAML: promtool reads it as it is.
      writeFileSync(file, JSON.stringify(tests));
      const { stdout } = await run(promtool!, ['test', 'rules', file]);
      assert.match(stdout, /SUCCESS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
