// `npm run bench`: check-in throughput and p99 of the real server on SQLite against a plain node:http ceiling,
// engine step time at 10k/100k/1M devices, and rehearsal speed. Figures, not pass/fail timers.
// Options (after `npm run bench --`): --devices 1000 --seconds 10 --concurrency 32 --engine 10000,100000,1000000
//   --rehearse 100000 --only checkin,engine,rehearsal
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
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
    only: { type: 'string', default: 'checkin,engine,rehearsal' },
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
      initialAdminToken: 'adm-bench',
    });
    const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
    const admin = { authorization: 'Bearer adm-bench', 'content-type': 'application/json' };
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
say(`results written to ${resultsDir}`);
