// `npm run bench`: check-in throughput and p99 of the real server on SQLite against a plain node:http ceiling,
// engine step time at 10k/100k/1M devices, rehearsal speed, and load isolation (honest devices' check-in
// latency while one device abuses the server). Figures, not pass/fail timers.
// Options (after `npm run bench --`): --devices 1000 --seconds 10 --concurrency 32 --engine 10000,100000,1000000
//   --rehearse 100000 --only checkin,engine,rehearsal,abuse --rounds 5
//   --rounds: benches that compare a measurement with a reference (check-in: server / node:http ceiling; abuse:
//     p99 under abuse / quiet p99; bench/engine.ts: step / plain loop) alternate the two in that many rounds
//     (A B, B A, A B, …) and report the median ratio with its spread (min–max, interquartile range): on a
//     shared machine one long A then one long B mostly measures what the neighbours did meanwhile.
//   check-in: --seconds is the total per side, split over the rounds (10 s and 5 rounds: 2 s phases).
//   abuse: --honest 1000 --phase-rounds 2 --round-ms 2000 --honest-concurrency 64 --slow 2000
//     --abuse-vectors reports,labels,slow,bad-tokens (a subset runs only those attacks, to see what each costs)
//   fleet1m (not in the default set: minutes): --only fleet1m --fleet1m-devices 1000000 --fleet1m-seconds 16
//   replicas (not in the default set; PostgreSQL): --only replicas — check-ins with one and two replicas
//   wake (not in the default set): --only wake --held 10000
//   evidence: detection power of the evidence gate against the failure budget (bench/evidence-power.ts; also
//     `npm run bench:evidence`; about a minute): --evidence-runs 200 seeded runs per cell
//   cli: compiled CLI start (--version, --help) against `node -e 0`, and the server's time to its first answer
//     (bench/cli-start.ts; also `npm run bench:cli`)
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { cpus, setPriority, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { AssignmentIndex } from '../src/engine/assignment-index.ts';
import { parsePlan } from '../src/engine/plan.ts';
import { type Assignment, newRollout, step } from '../src/engine/rollout.ts';
import { createServer } from '../src/server/app.ts';
import { engineView, generateFleet } from '../src/sim/fleet.ts';
import { createRng } from '../src/sim/prng.ts';
import { rehearse } from '../src/sim/rehearsal.ts';
import { compareLoad, type Load, type Rounds } from './load-generator.ts';
import { benchReplicas } from './replicas.ts';
import { round, spread as spreadOf } from './stats.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '32' },
    engine: { type: 'string', default: '10000,100000,1000000' },
    rehearse: { type: 'string', default: '10000,100000' },
    only: { type: 'string', default: 'cli,checkin,engine,rehearsal,abuse,evidence' },
    honest: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '5' },
    // --only fleet1m (bench/fleet1m.ts): devices registered, and seconds of check-ins per side.
    'fleet1m-devices': { type: 'string', default: '1000000' },
    'fleet1m-seconds': { type: 'string', default: '16' },
    'phase-rounds': { type: 'string', default: '2' },
    'round-ms': { type: 'string', default: '2000' },
    'honest-concurrency': { type: 'string', default: '64' },
    slow: { type: 'string', default: '2000' },
    'abuse-vectors': { type: 'string', default: 'reports,labels,slow,bad-tokens' },
    held: { type: 'string', default: '10000' }, // --only wake: held waits (bench/wake.ts)
    'evidence-runs': { type: 'string', default: '200' }, // --only evidence (bench/evidence-power.ts)
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

/** Unrounded: this file rounds where it prints. */
const spread = (xs: number[]) => spreadOf(xs, 15);
const round2 = (x: number) => round(x);

/** The load generator against the server and the ceiling, with this run's options. */
const load = (urls: [string, string], tokensFile: string, rounds: number): Promise<Rounds> =>
  compareLoad({ urls, tokensFile, rounds, concurrency: values.concurrency!, seconds: values.seconds! });

async function benchCheckin() {
  const n = Number(values.devices);
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-'));
  try {
    const srv = await createServer({
      // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
      governance: { fourEyes: false },
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
    const rounds = Math.max(1, Number(values.rounds));
    say(
      `check-in: ${n} devices enrolled; load generator: separate process, ${values.concurrency} connections; ` +
        `${rounds} rounds alternating server and ceiling (A B, B A, …), ${round2(Number(values.seconds) / rounds)}s each, ` +
        `after a 1 s warm-up of each`,
    );
    // Both servers stay up (and warm) for the whole run; one load generator alternates between them, so a
    // neighbour's load on this shared machine falls on both sides of each ratio instead of on one run.
    const measured = await load([url, `http://127.0.0.1:${addr.port}`], tokensFile, rounds);
    await srv.close();
    await new Promise((r) => plain.close(r));

    const perRound = measured.rounds.map((r, k) => ({
      round: k + 1,
      order: r.first === 'a' ? 'server, ceiling' : 'ceiling, server',
      server: r.a,
      ceiling: r.b,
      ratio_percent: Math.round((r.a.rps / r.b.rps) * 1000) / 10,
    }));
    const ratios = spread(perRound.map((r) => r.ratio_percent));
    const serverP99 = spread(perRound.map((r) => r.server.p99_ms));
    // Figures over all rounds together, as one long run would give them.
    const pooled = (side: 'server' | 'ceiling'): Load => {
      const xs = perRound.map((r) => r[side]);
      const requests = xs.reduce((s, x) => s + x.requests, 0);
      const seconds = xs.reduce((s, x) => s + x.seconds, 0);
      return {
        requests,
        errors: xs.reduce((s, x) => s + x.errors, 0),
        seconds: round2(seconds),
        rps: Math.round(requests / seconds),
        // Percentiles cannot be pooled exactly from per-round figures: the median over rounds.
        p50_ms: spread(xs.map((x) => x.p50_ms)).median,
        p99_ms: spread(xs.map((x) => x.p99_ms)).median,
        max_ms: Math.max(...xs.map((x) => x.max_ms)),
      };
    };
    const server = pooled('server');
    const ceiling = pooled('ceiling');
    const ratio = Math.round(ratios.median * 10) / 10;
    const result = {
      devices: n,
      concurrency: Number(values.concurrency),
      seconds: Number(values.seconds),
      rounds,
      phase_seconds: round2(measured.phase_seconds),
      database: 'sqlite',
      // Summed over the rounds (rps = requests / seconds); p50/p99 are medians over the rounds.
      server,
      ceiling,
      ratio_percent: ratio,
      ratio_percent_spread: {
        median: ratio,
        min: ratios.min,
        max: ratios.max,
        q1: Math.round(ratios.q1 * 10) / 10,
        q3: Math.round(ratios.q3 * 10) / 10,
      },
      server_p99_ms_median: serverP99.median,
      server_p99_ms_max: serverP99.max,
      per_round: perRound,
      target: 'median ratio >= 70% of the ceiling and median server p99 < 50 ms',
      meets_target: ratio >= 70 && serverP99.median < 50,
    };
    save('checkin', result);
    for (const r of perRound)
      say(
        `  round ${r.round} (${r.order}): server ${r.server.rps} req/s p99 ${r.server.p99_ms} ms, ` +
          `ceiling ${r.ceiling.rps} req/s p99 ${r.ceiling.p99_ms} ms, ratio ${r.ratio_percent}%` +
          (r.server.errors ? `, server errors ${r.server.errors}` : ''),
      );
    say(
      `  ringfence server (SQLite): ${server.rps} req/s over the rounds, p50 ${server.p50_ms} ms, p99 ${server.p99_ms} ms (medians), errors ${server.errors}`,
    );
    say(
      `  plain node:http ceiling : ${ceiling.rps} req/s over the rounds, p50 ${ceiling.p50_ms} ms, p99 ${ceiling.p99_ms} ms (medians)`,
    );
    say(
      `  ratio: median ${ratio}% of the ceiling (min–max ${ratios.min}–${ratios.max}%, IQR ${result.ratio_percent_spread.q1}–${result.ratio_percent_spread.q3}%); ` +
        `target >= 70%, p99 < 50 ms: ${result.meets_target ? 'met' : 'NOT met'}`,
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
    // A caller that keeps its assignments keeps the index beside them (built once here): the steady step reads
    // it instead of visiting every assignment. Without one the step rebuilds it (the full recomputation).
    const index = AssignmentIndex.of(assignments.values());
    const times: number[] = [];
    const fullTimes: number[] = [];
    for (let k = 0; k < 3; k++) {
      t0 = performance.now();
      step({ plan, rollout: first.rollout, assignments, index, devices, now: 2 + k });
      times.push(performance.now() - t0);
      t0 = performance.now();
      step({ plan, rollout: first.rollout, assignments, devices, now: 2 + k });
      fullTimes.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    fullTimes.sort((a, b) => a - b);
    const row = {
      devices: n,
      selected: new Set(first.changed.map((a) => a.deviceId)).size,
      start_wave_step_ms: Math.round(startMs),
      steady_step_ms: Math.round(times[1]),
      steady_step_without_index_ms: Math.round(fullTimes[1]),
      heap_mb: Math.round((process.memoryUsage().heapUsed - heapBefore) / 2 ** 20),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
    rows.push(row);
    say(
      `engine step, ${n} devices: start wave ${row.start_wave_step_ms} ms (${row.selected} selected and offered), steady step ${row.steady_step_ms} ms (${row.steady_step_without_index_ms} ms rebuilding the index), rss ${row.rss_mb} MB`,
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
  let onReady = () => {};
  const ready = new Promise<void>((r) => {
    onReady = r;
  });
  child.stdout.on('data', (d: Buffer) => {
    out += d;
    if (out.includes('"ready"')) onReady();
  });
  const done = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!))
        : reject(new Error(`bench/abuse.ts ${args[1]} exited ${code}`)),
    );
  });
  return { child, done, ready };
}

/**
 * Load isolation: 1,000 honest devices check in at a steady pace, first alone (quiet), then while one enrolled
 * device abuses the server (reports for transactions it was never offered, growing labels, slow connections,
 * bad tokens). Honest p99 under abuse against quiet, what the abuser was answered and what it cost the server.
 */
async function benchAbuse() {
  const n = Number(values.honest);
  const abRounds = Math.max(1, Number(values.rounds));
  const phaseRounds = Math.max(1, Number(values['phase-rounds']));
  const roundMs = Number(values['round-ms']);
  // Quiet (q) and abuse (a) phases alternate, q a, a q, q a, …; each phase is phaseRounds honest rounds. Every
  // abuse phase is an attack of its own (its opening burst included: the first seconds of an attack cost the
  // honest devices most), and is followed by a settling phase (w): the seconds after an attack carry its aftermath
  // (measured: p99 up to 120 ms), reported apart instead of being counted as quiet. So a round is q a w or a w q.
  const phases = Array.from({ length: abRounds }, (_, k) => (k % 2 === 0 ? 'qaw' : 'awq')).join('');
  const rounds = phases.length * phaseRounds;
  const phaseMs = phaseRounds * roundMs;
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-abuse-'));
  const dataDir = join(dir, 'server');
  const dbBytes = () =>
    ['ringfence.db', 'ringfence.db-wal'].reduce((sum, f) => {
      const p = join(dataDir, f);
      return sum + (existsSync(p) ? statSync(p).size : 0);
    }, 0);
  // The server's side, per kind of phase: peak RSS, CPU time of this process (the server; the load generators
  // are elsewhere) and how long its event loop was blocked.
  type Kind = 'q' | 'a' | 'w';
  let kind: Kind | null = null;
  const rssPeak = { q: 0, a: 0, w: 0 };
  const sampler = setInterval(() => {
    if (kind) rssPeak[kind] = Math.max(rssPeak[kind], process.memoryUsage().rss);
  }, 200);
  const cpuUs = { q: 0, a: 0, w: 0 };
  // One event-loop delay histogram for the whole run, read and reset at each phase boundary (re-enabling a
  // disabled one would count the time it was off as one long delay).
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const loopByPhase: Record<Kind, Array<{ p99: number; max: number }>> = { q: [], a: [], w: [] };
  let cpuMark = process.cpuUsage();
  const enter = (next: Kind | null) => {
    const u = process.cpuUsage(cpuMark);
    cpuMark = process.cpuUsage();
    if (kind) {
      cpuUs[kind] += u.user + u.system;
      loopByPhase[kind].push({ p99: loop.percentile(99), max: loop.max });
    }
    loop.reset();
    if (next) loop.enable();
    else loop.disable();
    kind = next;
  };
  const serverSide = (k: Kind) => ({
    cpu_s: Math.round(cpuUs[k] / 10_000) / 100,
    // The worst phase of the kind.
    event_loop_delay_p99_ms: Math.round(Math.max(0, ...loopByPhase[k].map((x) => x.p99)) / 1e4) / 100,
    event_loop_delay_max_ms: Math.round(Math.max(0, ...loopByPhase[k].map((x) => x.max)) / 1e4) / 100,
  });
  const mb = (b: number) => Math.round(b / 2 ** 20);
  try {
    const srv = await createServer({
      // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
      governance: { fourEyes: false },
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
      `abuse: ${n} honest devices + 1 abuser enrolled in ${enrollS}s; ${abRounds} rounds alternating a quiet and an ` +
        `abuse phase (q a, a q, …; a settling phase after each attack), each ${phaseRounds} honest rounds × ${roundMs} ms (every device checks in once a ` +
        `round), ${values['honest-concurrency']} in flight; load generators are separate processes`,
    );
    say(
      `  phases: ${phases} (q quiet, a abuse, w settling after an attack: reported apart, not in the ratio)`,
    );

    // Both load generators start their measured part at the same wall-clock time. The abuser is started first
    // and the honest devices once it is set up (its start-up would otherwise weigh on the first quiet phase),
    // with room for their own start-up and two warm-up rounds.
    const startAt = Date.now() + 8000 + 2 * roundMs;
    // The abuser attacks in the abuse phases only, each phase one window (ms after startAt).
    const windows = [...phases].flatMap((p, j) => (p === 'a' ? [[j * phaseMs, (j + 1) * phaseMs]] : []));
    const runS = (phases.length * phaseMs) / 1000;
    // Server-side figures follow the phases by wall clock.
    const timers = [...phases].map((p, j) =>
      setTimeout(() => enter(p as Kind), startAt + j * phaseMs - Date.now()),
    );
    const dbBefore = dbBytes();
    const attack = abuseRole([
      '--role',
      'abuser',
      '--url',
      url,
      '--token',
      abuser.device_token,
      '--start-at',
      String(startAt),
      '--windows',
      windows.map(([f, t]) => `${f}-${t}`).join(','),
      '--seconds',
      String(Math.ceil((startAt - Date.now()) / 1000 + runS + 30)), // hard stop, should stdin never close
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
    await Promise.race([attack.ready, attack.done]);
    if (Date.now() > startAt - 3000 - 2 * roundMs)
      say('  (the abuser was slow to set up: the first quiet phase may carry it)');
    const honestRun = abuseRole([
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
      '--phases',
      phases,
    ]);
    type Figures = {
      requests: number;
      statuses: Record<string, number>;
      p50_ms: number;
      p90_ms: number;
      p99_ms: number;
      max_ms: number;
      cpu_s: number;
    };
    let honestOut: Figures & {
      rounds_started_late: number;
      per_round: Array<{ p50_ms: number; p99_ms: number; seconds: number; cpu_s: number }>;
      per_phase: Array<Figures & { kind: Kind }>;
      by_kind: Record<Kind, Figures>;
    };
    try {
      honestOut = (await honestRun.done) as typeof honestOut;
    } finally {
      for (const t of timers) clearTimeout(t);
      enter(null);
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
    const dbAfter = dbBytes();
    const quiet = honestOut.by_kind.q;
    const abused = honestOut.by_kind.a;
    const serverQuiet = serverSide('q');
    const serverAbuse = serverSide('a');
    const settling = honestOut.by_kind.w;
    const serverSettling = serverSide('w');
    // Per round: p99 of its abuse phase over p99 of its quiet phase (settling phases left out).
    const measuredPhases = honestOut.per_phase.filter((p) => p.kind !== 'w');
    const perRound = Array.from({ length: abRounds }, (_, k) => {
      const [x, y] = [measuredPhases[2 * k], measuredPhases[2 * k + 1]];
      const [q, a] = x.kind === 'q' ? [x, y] : [y, x];
      return {
        round: k + 1,
        order: x.kind === 'q' ? 'quiet, abuse' : 'abuse, quiet',
        quiet: { p50_ms: q.p50_ms, p99_ms: q.p99_ms, requests: q.requests },
        under_abuse: { p50_ms: a.p50_ms, p99_ms: a.p99_ms, requests: a.requests },
        p99_ratio: round2(a.p99_ms / q.p99_ms),
      };
    });
    const ratios = spread(perRound.map((r) => r.p99_ratio));

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
    const ratio = round2(ratios.median);
    const result = {
      honest_devices: n,
      rounds: abRounds,
      phase_rounds: phaseRounds,
      phases,
      round_ms: roundMs,
      honest_concurrency: Number(values['honest-concurrency']),
      database: 'sqlite',
      limits_raised: { enrollmentBurst: n + 100, connectionsPerIp: n + 64 },
      // Honest check-ins pooled over all quiet / all abuse phases.
      quiet,
      under_abuse: abused,
      settling_after_abuse: settling,
      p99_ratio_pooled: round2(abused.p99_ms / quiet.p99_ms),
      // Median over the rounds of p99(abuse phase) / p99(quiet phase), and its spread.
      p99_ratio: ratio,
      p99_ratio_spread: {
        median: ratio,
        min: ratios.min,
        max: ratios.max,
        q1: round2(ratios.q1),
        q3: round2(ratios.q3),
      },
      per_round: perRound,
      honest_rounds_started_late: honestOut.rounds_started_late,
      honest_per_round: honestOut.per_round,
      target: 'median over rounds of honest p99 under abuse / quiet p99 <= 2',
      meets_target: ratio <= 2,
      abuser: attacked,
      abuser_answered: answered,
      abuser_report_rows_stored: abuserReports,
      abuser_reports_sent: attacked.reports.sent * 256,
      abuser_audit_rows: abuserAudit,
      server_counters: counters,
      db_bytes_before_abuse: dbBefore,
      // From the start of the first phase to the end of the last (quiet phases included).
      db_growth_bytes_during_abuse: dbAfter - dbBefore,
      server_rss_mb: { quiet_peak: mb(rssPeak.q), abuse_peak: mb(rssPeak.a), settling_peak: mb(rssPeak.w) },
      server_quiet: serverQuiet,
      server_under_abuse: serverAbuse,
      server_settling: serverSettling,
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
    if (settling)
      say(`  honest, settling   : ${fmt(settling)} (first phase after an attack; not in the ratio)`);
    say(
      `  honest p99 by ${roundMs} ms round, ms: ${honestOut.per_round
        .map((r, k) => `${phases[Math.floor(k / phaseRounds)]}:${Math.round(r.p99_ms)}`)
        .join(' ')}`,
    );
    for (const r of perRound)
      say(
        `  round ${r.round} (${r.order}): honest p99 quiet ${r.quiet.p99_ms} ms, under abuse ${r.under_abuse.p99_ms} ms, ratio ${r.p99_ratio}×`,
      );
    say(
      `  ratio p99(abuse) / p99(quiet): median ${ratio}× (min–max ${ratios.min}–${ratios.max}×, IQR ` +
        `${round2(ratios.q1)}–${round2(ratios.q3)}×; pooled ${result.p99_ratio_pooled}×; target <= 2×): ` +
        `${result.meets_target ? 'met' : 'NOT met'}` +
        (honestOut.rounds_started_late
          ? ` (${honestOut.rounds_started_late} honest rounds started late)`
          : ''),
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
    say(`  server RSS peak: quiet ${mb(rssPeak.q)} MB, under abuse ${mb(rssPeak.a)} MB`);
    say(
      `  CPU seconds, all phases of a kind — quiet: server ${serverQuiet.cpu_s}, honest generator ${quiet.cpu_s}; ` +
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
if (only.has('cli')) {
  const { benchCliStart } = await import('./cli-start.ts');
  save(
    'cli-start',
    await benchCliStart({ rounds: Number(values.rounds) * 3, serverRounds: Number(values.rounds) }),
  );
}
if (only.has('checkin')) await benchCheckin();
if (only.has('engine')) {
  // bench/engine.ts (the engine's own benchmark) writes results/engine.json when present; this one measures
  // the step that starts a whole-fleet wave and a steady step, into results/engine-step.json.
  const engineBench = join(root, 'bench', 'engine.ts');
  if (existsSync(engineBench)) {
    say('engine step (bench/engine.ts):');
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', engineBench, '--rounds', values.rounds!, ...values.engine!.split(',')],
        {
          stdio: 'inherit',
          cwd: root,
        },
      );
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`bench/engine.ts exited ${code}`)),
      );
    });
  }
  benchEngine();
}
if (only.has('fleet1m')) {
  // Its own process (it starts the server in another, and the load generator in a third).
  say('fleet1m (bench/fleet1m.ts):');
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(root, 'bench', 'fleet1m.ts'),
        '--devices',
        values['fleet1m-devices']!,
        '--seconds',
        values['fleet1m-seconds']!,
        '--rounds',
        String(Math.min(4, Number(values.rounds))),
        '--concurrency',
        values.concurrency!,
      ],
      { stdio: 'inherit', cwd: root },
    );
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`bench/fleet1m.ts exited ${code}`)),
    );
  });
}
if (only.has('rehearsal')) benchRehearsal();
if (only.has('abuse')) await benchAbuse();
if (only.has('wake')) {
  // bench/wake.ts: held wake-up waits (RSS, fds, notify-all time) and a 300 s-poll fleet's rollout time.
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(root, 'bench', 'wake.ts'), '--held', values.held!],
      { stdio: 'inherit', cwd: root },
    );
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`bench/wake.ts exited ${code}`))));
  });
}
if (only.has('evidence')) {
  // bench/evidence-power.ts: pure computation, its own process like the others; writes evidence-power.json.
  say('evidence gate detection power (bench/evidence-power.ts):');
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(root, 'bench', 'evidence-power.ts'), '--runs', values['evidence-runs']!],
      { stdio: 'inherit', cwd: root },
    );
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`bench/evidence-power.ts exited ${code}`)),
    );
  });
}
if (only.has('replicas'))
  save(
    'replicas',
    await benchReplicas({
      devices: Number(values.devices),
      seconds: Number(values.seconds),
      concurrency: Number(values.concurrency),
      rounds: Math.max(1, Number(values.rounds)),
      say,
    }),
  );
say(`results written to ${resultsDir}`);
