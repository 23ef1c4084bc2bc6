// `npm run bench`: check-in throughput and p99 of the real server on SQLite against a plain node:http ceiling,
// engine step time at 10k/100k/1M devices, rehearsal speed, and load isolation (honest devices' check-in
// latency while one device abuses the server). Figures, not pass/fail timers.
// Options (after `npm run bench --`): --devices 1000 --seconds 10 --concurrency 32 --engine 10000,100000,1000000
//   --rehearse 100000 --only checkin,engine,rehearsal,abuse
//   abuse: --honest 1000 --rounds 10 --round-ms 2000 --honest-concurrency 64 --slow 2000
//     --abuse-vectors reports,labels,slow,bad-tokens (a subset runs only those attacks, to see what each costs)
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { cpus, setPriority, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { parsePlan } from '../src/engine/plan.ts';
import { type Assignment, newRollout, step } from '../src/engine/rollout.ts';
import { createServer } from '../src/server/app.ts';
import { engineView, generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { rehearse } from '../src/sim/rehearsal.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '32' },
    engine: { type: 'string', default: '10000,100000,1000000' },
    rehearse: { type: 'string', default: '10000,100000' },
    only: { type: 'string', default: 'checkin,engine,rehearsal,abuse' },
    honest: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '10' },
    'round-ms': { type: 'string', default: '2000' },
    'honest-concurrency': { type: 'string', default: '64' },
    slow: { type: 'string', default: '2000' },
    'abuse-vectors': { type: 'string', default: 'reports,labels,slow,bad-tokens' },
  },
});
const only = new Set(values.only!.split(','));
const root = new URL('..', import.meta.url).pathname;
const resultsDir = join(root, 'bench', 'results');
mkdirSync(resultsDir, { recursive: true });
const machine = {
  node: process.version,
  cpus: cpus().length,
  cpu: cpus()[0]?.model,
  mem_gb: Math.round(totalmem() / 2 ** 30),
};
// A strong token, as the server requires of an initial admin token.
const BENCH_ADMIN = 'rfadm_bench_0123456789abcdefghijklmnopqrstuvwxyz';
const say = (s: string) => process.stdout.write(`${s}\n`);
const save = (name: string, data: unknown) =>
  writeFileSync(
    join(resultsDir, `${name}.json`),
    `${JSON.stringify({ at: new Date().toISOString(), machine, ...(data as object) }, null, 2)}\n`,
  );

interface Load {
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** Runs the load generator as a separate process against url and returns its figures. */
function load(url: string, tokensFile: string): Promise<Load> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(root, 'bench', 'checkin-load.ts'),
        '--url',
        url,
        '--tokens',
        tokensFile,
        '--concurrency',
        values.concurrency!,
        '--seconds',
        values.seconds!,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], cwd: root },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!))
        : reject(new Error(`load generator exited ${code}`)),
    );
  });
}

async function benchCheckin() {
  const n = Number(values.devices);
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-'));
  try {
    const srv = await createServer({
      dataDir: join(dir, 'server'),
      logger: pino({ level: 'silent' }),
      initialAdminToken: BENCH_ADMIN,
      // This bench measures raw check-in throughput: each simulated device checks in far faster than its poll
      // interval, which the default per-device rate would (rightly) refuse.
      limits: { checkinBurst: 1_000_000, enrollmentBurst: 1_000_000 },
    });
    const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
    const admin = { authorization: `Bearer ${BENCH_ADMIN}`, 'content-type': 'application/json' };
    const tok = (await (
      await fetch(`${url}/v1/admin/enroll-tokens`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ uses: n }),
      })
    ).json()) as { token: string };
    const tokens: string[] = [];
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, n - i) }, (_, k) =>
          fetch(`${url}/v1/enroll`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              token: tok.token,
              name: `bench-${i + k}`,
              labels: { env: 'prod', tier: 'C' },
            }),
          }).then((r) => r.json() as Promise<{ device_token: string }>),
        ),
      );
      for (const b of batch) tokens.push(b.device_token);
    }
    if (tokens.some((t) => !t)) throw new Error('enrollment failed');
    const tokensFile = join(dir, 'tokens.json');
    writeFileSync(tokensFile, JSON.stringify(tokens));
    say(
      `check-in: ${n} devices enrolled; load generator: separate process, ${values.concurrency} connections, ${values.seconds}s`,
    );
    const server = await load(url, tokensFile);
    await srv.close();

    // The ceiling: a plain node:http server on this runtime answering a fixed JSON of the same shape.
    const fixed = JSON.stringify({ poll_seconds: 30, desired: [], acked: [] });
    const plain = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(fixed),
        });
        res.end(fixed);
      });
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const addr = plain.address() as { port: number };
    const ceiling = await load(`http://127.0.0.1:${addr.port}`, tokensFile);
    await new Promise((r) => plain.close(r));
    const ratio = Math.round((server.rps / ceiling.rps) * 1000) / 10;
    const result = {
      devices: n,
      concurrency: Number(values.concurrency),
      seconds: Number(values.seconds),
      database: 'sqlite',
      server,
      ceiling,
      ratio_percent: ratio,
      target: 'ratio >= 50% and server p99 < 50 ms',
      meets_target: ratio >= 50 && server.p99_ms < 50,
    };
    save('checkin', result);
    say(
      `  ringfence server (SQLite): ${server.rps} req/s, p50 ${server.p50_ms} ms, p99 ${server.p99_ms} ms, errors ${server.errors}`,
    );
    say(
      `  plain node:http ceiling : ${ceiling.rps} req/s, p50 ${ceiling.p50_ms} ms, p99 ${ceiling.p99_ms} ms`,
    );
    say(
      `  ratio: ${ratio}% of the ceiling (target >= 50%, p99 < 50 ms): ${result.meets_target ? 'met' : 'NOT met'}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Engine step time: the step that starts a wave over the whole fleet, and a steady step with all offered. */
function benchEngine() {
  const plan = parsePlan(`
name: bench
waves:
  - { name: all, select: env=prod, size: 100%, order: [role=replica], max_failures: 1% }
`);
  const rows = [];
  for (const n of values.engine!.split(',').map(Number)) {
    const fleet = generateFleet(n, createRng('bench'));
    const devices = engineView(fleet, '1');
    const rollout = newRollout({ id: 'b', component: 'c', version: '2', releaseCreatedAt: 0, now: 0 });
    const heapBefore = process.memoryUsage().heapUsed;
    let t0 = performance.now();
    const first = step({ plan, rollout, assignments: new Map(), devices, now: 1 });
    const startMs = performance.now() - t0;
    const assignments = new Map<string, Assignment>(first.changed.map((a) => [a.deviceId, a]));
    const times: number[] = [];
    for (let k = 0; k < 3; k++) {
      t0 = performance.now();
      step({ plan, rollout: first.rollout, assignments, devices, now: 2 + k });
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const row = {
      devices: n,
      selected: new Set(first.changed.map((a) => a.deviceId)).size,
      start_wave_step_ms: Math.round(startMs),
      steady_step_ms: Math.round(times[1]),
      heap_mb: Math.round((process.memoryUsage().heapUsed - heapBefore) / 2 ** 20),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
    rows.push(row);
    say(
      `engine step, ${n} devices: start wave ${row.start_wave_step_ms} ms (${row.selected} selected and offered), steady step ${row.steady_step_ms} ms, rss ${row.rss_mb} MB`,
    );
  }
  save('engine-step', { plan: 'one 100% wave over env=prod, ordered replicas first', rows });
}

function benchRehearsal() {
  const plan = parsePlan(readFileSync(join(root, 'examples', 'plans', 'standard.yaml'), 'utf8'));
  const rows = [];
  for (const n of values.rehearse!.split(',').map(Number)) {
    const t0 = performance.now();
    const fleet = generateFleet(n, createRng('fleet:1'));
    const t1 = performance.now();
    const r = rehearse({ plan, fleet, seed: '1' });
    const wall = (performance.now() - t1) / 1000;
    const row = {
      devices: n,
      plan: plan.name,
      end_state: r.end_state,
      virtual_days: Math.round((r.virtual_ms / 86_400_000) * 10) / 10,
      engine_steps: r.steps,
      device_events: r.device_events,
      fleet_generation_s: Math.round((t1 - t0) / 10) / 100,
      wall_s: Math.round(wall * 100) / 100,
      device_events_per_s: Math.round(r.device_events / wall),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
    rows.push(row);
    say(
      `rehearsal, ${n} devices, plan standard: ${row.virtual_days} virtual days in ${row.wall_s}s wall, ${r.steps} engine steps, ${row.device_events_per_s} device-events/s, rss ${row.rss_mb} MB`,
    );
  }
  save('rehearsal', { rows });
}

/** Runs bench/abuse.ts in one role as a separate process; `done` resolves with its last output line (JSON). */
function abuseRole(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench', 'abuse.ts'), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    cwd: root,
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d;
  });
  const done = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!))
        : reject(new Error(`bench/abuse.ts ${args[1]} exited ${code}`)),
    );
  });
  return { child, done };
}

/**
 * Load isolation: 1,000 honest devices check in at a steady pace, first alone (quiet), then while one enrolled
 * device abuses the server (reports for transactions it was never offered, growing labels, slow connections,
 * bad tokens). Honest p99 under abuse against quiet, what the abuser was answered and what it cost the server.
 */
async function benchAbuse() {
  const n = Number(values.honest);
  const rounds = Number(values.rounds);
  const roundMs = Number(values['round-ms']);
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-abuse-'));
  const dataDir = join(dir, 'server');
  const dbBytes = () =>
    ['ringfence.db', 'ringfence.db-wal'].reduce((sum, f) => {
      const p = join(dataDir, f);
      return sum + (existsSync(p) ? statSync(p).size : 0);
    }, 0);
  let rssPeak = 0;
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }, 200);
  const mb = (b: number) => Math.round(b / 2 ** 20);
  try {
    const srv = await createServer({
      dataDir,
      logger: pino({ level: 'silent' }),
      initialAdminToken: BENCH_ADMIN,
      // Every simulated device shares one loopback address here, where a real fleet has one address per device
      // (or per site): only the per-address limits are raised, enough for the whole simulated fleet to enroll at
      // once and for each device to hold its own connection. Every per-device limit (check-in rate, report and
      // audit quotas, label caps) stays at its default: those are what the abuser meets.
      limits: { enrollmentBurst: n + 100, connectionsPerIp: n + 64 },
    });
    const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
    const admin = { authorization: `Bearer ${BENCH_ADMIN}`, 'content-type': 'application/json' };
    const t0 = performance.now();
    const tok = (await (
      await fetch(`${url}/v1/admin/enroll-tokens`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ uses: n + 1 }),
      })
    ).json()) as { token: string };
    const enrolled: Array<{ device_id: string; device_token: string }> = [];
    for (let i = 0; i <= n; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, n + 1 - i) }, (_, k) =>
          fetch(`${url}/v1/enroll`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ token: tok.token, name: i + k === n ? 'abuser' : `honest-${i + k}` }),
          }).then((r) => r.json() as Promise<{ device_id: string; device_token: string }>),
        ),
      );
      enrolled.push(...batch);
    }
    if (enrolled.some((d) => !d.device_token)) throw new Error('enrollment failed');
    const abuser = enrolled[n];
    const tokensFile = join(dir, 'tokens.json');
    writeFileSync(tokensFile, JSON.stringify(enrolled.slice(0, n).map((d) => d.device_token)));
    const enrollS = Math.round((performance.now() - t0) / 100) / 10;
    say(
      `abuse: ${n} honest devices + 1 abuser enrolled in ${enrollS}s; each phase ${rounds} rounds × ${roundMs} ms ` +
        `(every device checks in once a round), ${values['honest-concurrency']} in flight; load generators are separate processes`,
    );

    const honestArgs = (startAt: number) => [
      '--role',
      'honest',
      '--url',
      url,
      '--tokens',
      tokensFile,
      '--rounds',
      String(rounds),
      '--round-ms',
      String(roundMs),
      '--concurrency',
      values['honest-concurrency']!,
      '--start-at',
      String(startAt),
    ];
    // Both load generators start their measured part at the same wall-clock time, after the honest warm-up
    // round (start-up and one round of check-ins), so the abuser's first burst falls inside the measurement.
    const lead = () => Date.now() + 2000 + roundMs;

    // The server's side of each phase: CPU time of this process (the server; the load generators are
    // elsewhere) and how long its event loop was blocked.
    const serverSide = () => {
      const cpu0 = process.cpuUsage();
      const loop = monitorEventLoopDelay({ resolution: 10 });
      loop.enable();
      return () => {
        loop.disable();
        const u = process.cpuUsage(cpu0);
        return {
          cpu_s: Math.round((u.user + u.system) / 10_000) / 100,
          event_loop_delay_p99_ms: Math.round(loop.percentile(99) / 1e4) / 100,
          event_loop_delay_max_ms: Math.round(loop.max / 1e4) / 100,
        };
      };
    };

    // Phase 1: honest load alone.
    rssPeak = 0;
    let measure = serverSide();
    const quiet = (await abuseRole(honestArgs(lead())).done) as Record<string, number>;
    const serverQuiet = measure();
    const rssQuiet = rssPeak;

    // Phase 2: the same honest load while the abuser attacks; the abuser stops when its stdin closes.
    const dbBefore = dbBytes();
    rssPeak = 0;
    const startAt = lead();
    measure = serverSide();
    const phaseS = (rounds * roundMs) / 1000;
    const attack = abuseRole([
      '--role',
      'abuser',
      '--url',
      url,
      '--token',
      abuser.device_token,
      '--start-at',
      String(startAt),
      '--seconds',
      String(Math.ceil(phaseS + roundMs / 1000 + 30)), // hard stop, should stdin never close
      '--address',
      '127.0.0.1', // its requests come from the honest devices' address (one NAT): the worst case for per-IP limits
      '--slow-address',
      '127.0.0.2', // its slow connections from its own address, so the per-IP connection cap applies to it alone
      '--slow',
      values.slow!,
      '--vectors',
      values['abuse-vectors']!,
    ]);
    // A real attacker runs on its own machine; here its load generator shares the server's two cores and would
    // otherwise take most of one (≈ 16 CPU-seconds in a 20 s phase, measured). Lowest scheduling priority gives
    // the server and the honest devices the CPU first, while the attacker still sends as fast as it can get CPU.
    if (attack.child.pid) setPriority(attack.child.pid, 19);
    const honestUnderAbuse = abuseRole(honestArgs(startAt));
    let abused: Record<string, number>;
    try {
      abused = (await honestUnderAbuse.done) as Record<string, number>;
    } finally {
      attack.child.stdin.end();
    }
    const attacked = (await attack.done) as {
      requests: number;
      reports: { sent: number; statuses: Record<string, number> };
      labels: { sent: number; statuses: Record<string, number> };
      bad_tokens: { sent: number; statuses: Record<string, number> };
      slow: Record<string, unknown>;
      cpu_s: number;
    };
    const serverAbuse = measure();
    const rssAbuse = rssPeak;
    const dbAfter = dbBytes();

    const { db } = srv.ctx.store;
    const count = async (table: 'reports' | 'audit', col: 'device_id' | 'subject', v: string) =>
      Number(
        (
          await db
            .selectFrom(table)
            .select((eb) => eb.fn.countAll().as('n'))
            .where(col, '=', v)
            .executeTakeFirstOrThrow()
        ).n,
      );
    const abuserReports = await count('reports', 'device_id', abuser.device_id);
    const abuserAudit = await count('audit', 'subject', `device/${abuser.device_id}`);
    const metricsText = await (await fetch(`${url}/metrics`)).text();
    const counters: Record<string, number> = {};
    for (const m of metricsText.matchAll(
      /^ringfence_(throttled_total|reports_dropped_total)\{(?:what|reason)="([^"]+)"\} (\d+)/gm,
    ))
      counters[`${m[1].replace('_total', '')}.${m[2]}`] = Number(m[3]);
    await srv.close();

    const answered: Record<string, number> = {};
    for (const k of ['reports', 'labels', 'bad_tokens'] as const)
      for (const [status, c] of Object.entries(attacked[k].statuses))
        answered[status] = (answered[status] ?? 0) + c;
    const ratio = Math.round((abused.p99_ms / quiet.p99_ms) * 100) / 100;
    const result = {
      honest_devices: n,
      rounds,
      round_ms: roundMs,
      honest_concurrency: Number(values['honest-concurrency']),
      database: 'sqlite',
      limits_raised: { enrollmentBurst: n + 100, connectionsPerIp: n + 64 },
      quiet,
      under_abuse: abused,
      p99_ratio: ratio,
      target: 'honest p99 under abuse <= 2 x quiet p99',
      meets_target: ratio <= 2,
      abuser: attacked,
      abuser_answered: answered,
      abuser_report_rows_stored: abuserReports,
      abuser_reports_sent: attacked.reports.sent * 256,
      abuser_audit_rows: abuserAudit,
      server_counters: counters,
      db_bytes_before_abuse: dbBefore,
      db_growth_bytes_during_abuse: dbAfter - dbBefore,
      server_rss_mb: { quiet_peak: mb(rssQuiet), abuse_peak: mb(rssAbuse) },
      server_quiet: serverQuiet,
      server_under_abuse: serverAbuse,
    };
    save('abuse', result);
    const fmt = (r: Record<string, unknown>) =>
      `p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms, max ${r.max_ms} ms (${r.requests} check-ins, statuses ${JSON.stringify(r.statuses)})`;
    const st = (s: Record<string, number>) =>
      Object.entries(s)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ');
    say(`  honest, quiet      : ${fmt(quiet)}`);
    say(`  honest, under abuse: ${fmt(abused)}`);
    const rounds99 = (r: Record<string, unknown>) =>
      (r.per_round as Array<{ p99_ms: number }>).map((x) => Math.round(x.p99_ms)).join(' ');
    say(`  honest p99 by round, ms — quiet: ${rounds99(quiet)}; under abuse: ${rounds99(abused)}`);
    say(
      `  ratio p99(abuse) / p99(quiet): ${ratio}× (target <= 2×): ${result.meets_target ? 'met' : 'NOT met'}`,
    );
    say(
      `  abuser: ${attacked.requests} requests answered 429: ${answered['429'] ?? 0}, 400: ${answered['400'] ?? 0}, ` +
        `401: ${answered['401'] ?? 0}, 200: ${answered['200'] ?? 0}, no answer: ${answered['0'] ?? 0}`,
    );
    say(`    256-report check-ins: ${attacked.reports.sent} (${st(attacked.reports.statuses)})`);
    say(`    growing labels      : ${attacked.labels.sent} (${st(attacked.labels.statuses)})`);
    say(`    bad tokens          : ${attacked.bad_tokens.sent} (${st(attacked.bad_tokens.statuses)})`);
    say(`    slow connections    : ${JSON.stringify(attacked.slow)}`);
    say(
      `  abuser report rows stored: ${abuserReports} of ${result.abuser_reports_sent} sent; audit rows about it: ${abuserAudit}`,
    );
    say(`  server counters: ${JSON.stringify(counters)}`);
    say(
      `  database growth during abuse: ${Math.round((dbAfter - dbBefore) / 1024)} KiB (db + wal, ${Math.round(dbBefore / 1024)} KiB before)`,
    );
    say(`  server RSS peak: quiet ${mb(rssQuiet)} MB, under abuse ${mb(rssAbuse)} MB`);
    say(
      `  CPU seconds in the phase — quiet: server ${serverQuiet.cpu_s}, honest generator ${quiet.cpu_s}; ` +
        `under abuse: server ${serverAbuse.cpu_s}, honest generator ${abused.cpu_s}, abuser ${attacked.cpu_s}`,
    );
    say(
      `  server event-loop delay p99 / max — quiet: ${serverQuiet.event_loop_delay_p99_ms} / ${serverQuiet.event_loop_delay_max_ms} ms; ` +
        `under abuse: ${serverAbuse.event_loop_delay_p99_ms} / ${serverAbuse.event_loop_delay_max_ms} ms`,
    );
  } finally {
    clearInterval(sampler);
    rmSync(dir, { recursive: true, force: true });
  }
}

say(`ringfence bench on ${machine.cpus} × ${machine.cpu}, ${machine.node}`);
if (only.has('checkin')) await benchCheckin();
if (only.has('engine')) {
  // bench/engine.ts (the engine's own benchmark) writes results/engine.json when present; this one measures
  // the step that starts a whole-fleet wave and a steady step, into results/engine-step.json.
  const engineBench = join(root, 'bench', 'engine.ts');
  if (existsSync(engineBench)) {
    say('engine step (bench/engine.ts):');
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', engineBench, ...values.engine!.split(',')], {
        stdio: 'inherit',
        cwd: root,
      });
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`bench/engine.ts exited ${code}`)),
      );
    });
  }
  benchEngine();
}
if (only.has('rehearsal')) benchRehearsal();
if (only.has('abuse')) await benchAbuse();
say(`results written to ${resultsDir}`);
