// A million devices per node: registers N devices (bulk insert through the store layer), starts a rollout whose
// one 100 % wave covers all of them, then drives check-ins at random devices while the wave is offered, beside
// a plain node:http ceiling in alternating rounds (one load generator process, bench/checkin-load.ts). The
// server runs in its own process (this file with `serve DIR`) and reports its engine step timings and RSS.
// Usage: tsx bench/fleet1m.ts [--devices 1000000] [--seconds 20] [--rounds 4] [--concurrency 32]
//   [--sample 200000] (check-ins go to this many devices, drawn at random from the fleet)
// Writes bench/results/fleet1m.json. Bounded: setup is linear in N (about a minute at 1 M on a quiet machine),
// the load phase is --seconds per side.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createServer } from '../src/server/app.ts';
import { openStore } from '../src/server/db/database.ts';
import { type DeviceComponentRow, upsertComponents } from '../src/server/db/device-components.ts';
import { insertDevicesBulk } from '../src/server/db/devices.ts';
import { encode } from '../src/server/db/json.ts';
import { recentStepTimings } from '../src/server/services/rollout-step.ts';
import { hashToken } from '../src/server/tokens.ts';
import { generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { compareLoad, type Rounds } from './load-generator.ts';

const ADMIN = 'rfadm_bench_0123456789abcdefghijklmnopqrstuvwxyz';
const COMPONENT = 'sensor-content'; // what bench/checkin-load.ts reports
const root = new URL('..', import.meta.url).pathname;
const say = (s: string) => process.stdout.write(`${s}\n`);

/** The server process: listens, prints its URL, then once a second its RSS and its last step timings. */
async function serve(dataDir: string): Promise<void> {
  const srv = await createServer({
    // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
    governance: { fourEyes: false },
    dataDir,
    logger: pino({ level: 'silent' }),
    initialAdminToken: ADMIN,
    // Random devices each check in once or twice here: the per-device rate limit is not what is measured.
    limits: { checkinBurst: 1_000_000, enrollmentBurst: 1_000_000 },
  });
  const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
  const report = () =>
    process.stdout.write(
      `${JSON.stringify({ url, rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20), timings: recentStepTimings().slice(-20) })}\n`,
    );
  report();
  const timer = setInterval(report, 1000);
  const stop = async () => {
    clearInterval(timer);
    await srv.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.stdin.on('end', stop); // the parent went away
  process.stdin.resume();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      devices: { type: 'string', default: '1000000' },
      seconds: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '4' },
      concurrency: { type: 'string', default: '32' },
      sample: { type: 'string', default: '200000' },
    },
  });
  const n = Math.max(10, Number(values.devices));
  const dir = mkdtempSync(join(tmpdir(), 'rf-fleet1m-'));
  const dataDir = join(dir, 'server');
  let child: ChildProcess | null = null;
  const plain = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const fixed = JSON.stringify({ poll_seconds: 300, desired: [], acked: [] });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(fixed) });
      res.end(fixed);
    });
  });
  try {
    say(`fleet1m: ${n} devices on ${cpus().length} × ${cpus()[0]?.model}, ${process.version}`);
    let t0 = performance.now();
    const tokens = await register(dataDir, n);
    const setupS = (performance.now() - t0) / 1000;
    say(`  registered ${n} devices (+ components) in ${setupS.toFixed(1)} s`);

    const server = startServer(dataDir);
    child = server.child;
    const url = await server.url;
    const api = async <T>(method: string, path: string, body?: unknown, raw?: string): Promise<T> => {
      const res = await fetch(new URL(path, url), {
        method,
        headers: {
          authorization: `Bearer ${ADMIN}`,
          'content-type': raw === undefined ? 'application/json' : 'application/octet-stream',
        },
        body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as T;
    };
    const blob = await api<{ sha256: string; length: number }>('POST', '/v1/admin/blobs', undefined, 'v2\n');
    await api('POST', '/v1/admin/releases', {
      component: COMPONENT,
      version: '2.0.0',
      artifacts: [{ name: 'c.txt', ...blob }],
    });
    await api('POST', `/v1/admin/releases/${COMPONENT}@2.0.0/approve`, {});
    t0 = performance.now();
    await api('POST', '/v1/admin/plans', {
      source: `name: fleet1m
first_wave_cap: 100%
report_deadline: 1h
waves:
  - { name: all, select: env=prod, size: 100%, order: [role=replica], max_failures: 1% }
`,
    });
    const planS = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const ro = await api<{ id: number }>('POST', '/v1/admin/rollouts', {
      release: `${COMPONENT}@2.0.0`,
      plan: 'fleet1m',
    });
    const startS = (performance.now() - t0) / 1000;
    const waveStart = await server.timingWhere((t) => t.rolloutId === ro.id && t.changed > 0);
    say(
      `  plan checked against the fleet in ${planS.toFixed(1)} s; rollout start (HTTP) ${startS.toFixed(1)} s: ` +
        `load ${ms(waveStart.loadMs)}, engine step ${ms(waveStart.stepMs)}, persist ${ms(waveStart.saveMs)} ` +
        `(${waveStart.changed} assignments, ${waveStart.commands} offers)`,
    );

    // Check-ins at random devices (a random sample, in random order), alternating with the ceiling.
    const rng = createRng('fleet1m-load');
    const sample = Math.min(n, Number(values.sample));
    const picked: string[] = new Array(sample);
    for (let i = 0; i < sample; i++) picked[i] = tokens[Math.floor(rng.next() * n)];
    const tokensFile = join(dir, 'tokens.json');
    writeFileSync(tokensFile, JSON.stringify(picked));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const ceiling = `http://127.0.0.1:${(plain.address() as { port: number }).port}`;
    const rounds = Math.max(1, Number(values.rounds));
    const measured = await runLoad([url, ceiling], tokensFile, rounds, values.concurrency!, values.seconds!);
    const rssAfterLoad = server.last().rss_mb;

    // Steady steps: an operator pause and resume each step the rollout over the whole fleet.
    const before = server.seenCount();
    for (const action of ['pause', 'resume']) await api('POST', `/v1/admin/rollouts/${ro.id}/${action}`, {});
    const steady = (await server.timingsAfter(before, 2)).slice(-2);
    // Steady steps with news: devices report success while the wave is offered; each committed batch of reports
    // nudges a step, which reads only the rows the reports wrote since the last one (a delta of the kept copy).
    const beforeReports = server.seenCount();
    const reported = await reportSuccesses(url, picked.slice(0, REPORTS));
    const withNews = (await server.timingsAfter(beforeReports, 1)).slice(0, 20);

    const perRound = measured.rounds.map((r, k) => ({
      round: k + 1,
      server: r.a,
      ceiling: r.b,
      ratio_percent: Math.round((r.a.rps / r.b.rps) * 1000) / 10,
    }));
    const med = (xs: number[]) => {
      const v = [...xs].sort((a, b) => a - b);
      const m = (v.length - 1) / 2;
      return Math.round(((v[Math.floor(m)] + v[Math.ceil(m)]) / 2) * 100) / 100;
    };
    const dbBytes = ['ringfence.db', 'ringfence.db-wal'].reduce((s, f) => {
      try {
        return s + statSync(join(dataDir, f)).size;
      } catch {
        return s;
      }
    }, 0);
    const result = {
      at: new Date().toISOString(),
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
      devices: n,
      setup_s: +setupS.toFixed(1),
      plan_check_s: +planS.toFixed(1),
      rollout_start_http_s: +startS.toFixed(1),
      wave_start_step: round(waveStart),
      steady_steps: steady.map(round),
      steps_with_reports: { reports_accepted: reported, steps: withNews.map(round) },
      checkin: {
        sample_devices: sample,
        concurrency: Number(values.concurrency),
        rounds: perRound,
        server_rps_median: med(perRound.map((r) => r.server.rps)),
        server_p99_ms_median: med(perRound.map((r) => r.server.p99_ms)),
        ceiling_rps_median: med(perRound.map((r) => r.ceiling.rps)),
        ratio_percent_median: med(perRound.map((r) => r.ratio_percent)),
        ratio_percent_min: Math.min(...perRound.map((r) => r.ratio_percent)),
        ratio_percent_max: Math.max(...perRound.map((r) => r.ratio_percent)),
        server_errors: perRound.reduce((s, r) => s + r.server.errors, 0),
      },
      db_mb: Math.round(dbBytes / 2 ** 20),
      server_rss_mb: Math.max(rssAfterLoad, server.last().rss_mb),
      targets: {
        checkins_per_s: '>= 3300 with p99 < 100 ms',
        wave_start_engine_step_ms: '<= 1000',
        steady_engine_step_ms: '<= 100',
      },
    };
    mkdirSync(join(root, 'bench', 'results'), { recursive: true });
    writeFileSync(join(root, 'bench', 'results', 'fleet1m.json'), `${JSON.stringify(result, null, 2)}\n`);
    for (const r of perRound)
      say(
        `  round ${r.round}: server ${r.server.rps} check-ins/s p99 ${r.server.p99_ms} ms` +
          `${r.server.errors ? ` (${r.server.errors} errors)` : ''}, ceiling ${r.ceiling.rps}/s p99 ${r.ceiling.p99_ms} ms, ${r.ratio_percent}%`,
      );
    const c = result.checkin;
    say(
      `  check-ins at random devices of ${n}: median ${c.server_rps_median}/s, p99 ${c.server_p99_ms_median} ms ` +
        `(ceiling ${c.ceiling_rps_median}/s; ratio median ${c.ratio_percent_median}%, ${c.ratio_percent_min}–${c.ratio_percent_max}%)`,
    );
    for (const s of result.steady_steps)
      say(
        `  steady step: load ${s.loadMs} ms (assignments: ${s.read}, ${s.devices} device views), engine step ${s.stepMs} ms, persist ${s.saveMs} ms`,
      );
    const news = withNews.map(round);
    const worst = news.reduce((m, t) => Math.max(m, t.loadMs + t.stepMs + t.saveMs), 0);
    say(
      `  ${reported} success reports: ${news.length} steps with news, reads ${[...new Set(news.map((t) => t.read))].join('/')}, ` +
        `slowest ${worst} ms (load + engine + persist)`,
    );
    say(
      `  database ${result.db_mb} MB, server RSS ${result.server_rss_mb} MB; written bench/results/fleet1m.json`,
    );
  } finally {
    child?.kill('SIGTERM');
    plain.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const ms = (x: number) => `${Math.round(x)} ms`;

/** Success reports sent by this many devices, each in a check-in of its own. */
const REPORTS = 2000;

/** Each token's device checks in once with a success report for 2.0.0; returns how many were answered 200. */
async function reportSuccesses(url: string, tokens: string[]): Promise<number> {
  let ok = 0;
  let next = 0;
  const worker = async () => {
    while (next < tokens.length) {
      const k = next++;
      const res = await fetch(new URL('/v1/checkin', url), {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens[k]}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          agent_version: 'bench',
          components: [{ name: COMPONENT, version: '2.0.0', state: 'idle', health: { ok: true } }],
          reports: [{ txn_id: `bench-${k}`, component: COMPONENT, version: '2.0.0', outcome: 'succeeded' }],
        }),
      });
      await res.arrayBuffer();
      if (res.ok) ok++;
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return ok;
}

type Timing = ReturnType<typeof recentStepTimings>[number];

function round(t: Timing) {
  return {
    loadMs: Math.round(t.loadMs),
    stepMs: Math.round(t.stepMs),
    saveMs: Math.round(t.saveMs),
    assignments: t.assignments,
    devices: t.devices,
    changed: t.changed,
    commands: t.commands,
    read: t.read,
    fleet: t.fleet,
  };
}

/** Bulk-inserts n devices with generated labels, each running COMPONENT 1.0.0; returns their tokens. */
async function register(dataDir: string, n: number): Promise<string[]> {
  const fleet = generateFleet(n, createRng('fleet1m'));
  const store = await openStore({ dataDir });
  const tokens: string[] = new Array(n);
  const now = Date.now();
  const health = encode({ ok: true });
  const none = encode([] as string[]);
  try {
    // In slices, each its own transaction: memory stays bounded and SQLite commits a few times, not n times.
    const SLICE = 20_000;
    for (let i = 0; i < n; i += SLICE) {
      const list: Parameters<typeof insertDevicesBulk>[1][number][] = [];
      const comps: DeviceComponentRow[] = [];
      for (let k = i; k < Math.min(n, i + SLICE); k++) {
        const id = `f1m-${k.toString(36).padStart(5, '0')}`;
        tokens[k] = `rfdev_fleet1m_${k.toString(36)}_0123456789abcdef`;
        list.push({
          id,
          name: id,
          tokenHash: hashToken(tokens[k]),
          labels: fleet.labels[k],
          agentVersion: 'bench',
          now,
        });
        comps.push({
          device_id: id,
          component: COMPONENT,
          version: '1.0.0',
          state: 'idle' as const,
          health,
          quarantined: none,
          updated_at: now,
        });
      }
      await store.db.transaction().execute(async (tx) => {
        await insertDevicesBulk(tx, list);
        await upsertComponents(tx, comps);
      });
    }
  } finally {
    await store.close();
  }
  return tokens;
}

interface ServerReport {
  url: string;
  rss_mb: number;
  timings: Timing[];
}

/** Starts the server process; its reports arrive once a second. */
function startServer(dataDir: string) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(root, 'bench', 'fleet1m.ts'), 'serve', dataDir],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
      cwd: root,
    },
  );
  const got: { last: ServerReport | null } = { last: null };
  const seen: Timing[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const last = JSON.parse(line) as ServerReport;
    got.last = last;
    for (const t of last.timings)
      if (!seen.some((s) => s.at === t.at && s.rolloutId === t.rolloutId && s.stepMs === t.stepMs))
        seen.push(t);
    for (const w of waiters.splice(0)) w();
  });
  const next = (ms: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server stopped reporting')), ms);
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  const url = (async () => {
    while (!got.last) await next(120_000);
    return got.last.url;
  })();
  return {
    child,
    url,
    last: () => got.last!,
    /** The first step timing that satisfies ok (waits up to 10 minutes of reports). */
    async timingWhere(ok: (t: Timing) => boolean): Promise<Timing> {
      for (let k = 0; k < 600; k++) {
        const t = seen.find(ok);
        if (t) return t;
        await next(120_000);
      }
      throw new Error('no such step timing');
    },
    seenCount: () => seen.length,
    /** The timings after the first `skip` seen, once there are `count` more (waits up to 10 minutes). */
    async timingsAfter(skip: number, count: number): Promise<Timing[]> {
      for (let k = 0; k < 600 && seen.length < skip + count; k++) await next(120_000);
      return seen.slice(skip);
    },
  };
}

/** The load generator (its own process) alternating the server and the ceiling in rounds. */
const runLoad = (
  urls: [string, string],
  tokensFile: string,
  rounds: number,
  concurrency: string,
  seconds: string,
): Promise<Rounds> => compareLoad({ urls, tokensFile, rounds, concurrency, seconds, max: 10_000_000 });

if (process.argv[2] === 'serve') await serve(process.argv[3]);
else await main();
