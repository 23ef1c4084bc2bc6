// `npm run bench -- --only wake --held 10000` (bench/run.ts spawns this file): what held wake-up waits cost.
//   1. Held connections: a server in its own process (so /proc/PID tells its RSS and open fds), --held enrolled
//      devices each holding one POST /v1/wait (spread over 127.0.0.x source addresses), RSS and fds before and
//      after, per held wait, and the time from one operator action that notifies all of them (a hold by
//      selector) to every wait answered.
//   2. A fleet: --fleet real agent processes (the shipped build) polling every 300 s with wake-ups on, a 4-wave
//      plan with no bake; seconds from `rollout start` to completed.
// Every phase is bounded in time (--max-seconds per phase). Figures, not pass/fail.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { AGENT_BUNDLE, buildAgent } from '../scripts/build-agent.ts';
import { api, type Conn } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { prepareDevice, type SpawnedDevice, stopAgents, writeContent } from '../src/demo/fleet.ts';
import { createServer } from '../src/server/app.ts';
import { desiredTag } from '../src/server/services/desired-tag.ts';

const { values } = parseArgs({
  options: {
    held: { type: 'string', default: '10000' },
    fleet: { type: 'string', default: '20' },
    addresses: { type: 'string', default: '40' },
    'max-seconds': { type: 'string', default: '180' },
  },
});
const HELD = Number(values.held);
const FLEET = Number(values.fleet);
const ADDRESSES = Number(values.addresses);
const MAX_MS = Number(values['max-seconds']) * 1000;
const ADMIN = 'rfadm_bench_0123456789abcdefghijklmnopqrstuvwxyz';
const root = new URL('..', import.meta.url).pathname;
const say = (s: string) => process.stdout.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (kb: number) => Math.round(kb / 102.4) / 10;

/** Resident memory (kB) and open file descriptors of a process, from /proc. */
function usage(pid: number): { rssKb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { rssKb, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** Polls `fn` every 200 ms until it holds, at most MAX_MS (then throws naming `what`). */
async function until(fn: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const end = Date.now() + MAX_MS;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`bench: timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Runs `fn` over `items` with at most `n` at a time. */
async function pool<T>(items: T[], n: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

/** One JSON POST on its own connection (no keep-alive) from `localAddress`; status and parsed body. */
function post(url: string, path: string, token: string, body: unknown, localAddress?: string, agent?: Agent) {
  return new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      new URL(path, url),
      {
        method: 'POST',
        agent,
        localAddress,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(data),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : {} }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Gauge value from the server's /metrics. */
async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', url))).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

async function heldConnections(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-wake-'));
  const data = join(dir, 'server');
  mkdirSync(data, { recursive: true });
  // Only the per-address and rate limits a bench on one machine runs into are raised; wake defaults stay.
  writeFileSync(
    join(data, 'server.yaml'),
    [
      'host: 127.0.0.1',
      'port: 0',
      'poll_seconds: 300',
      'limits:',
      `  connections_per_ip: ${Math.ceil(HELD / ADDRESSES) + 200}`,
      '  enrollments_per_ip_per_minute: 1000000',
      '  enrollment_burst: 1000000',
      `  wake_max_held: ${Math.max(HELD + 100, 20_000)}`,
      '',
    ].join('\n'),
  );
  const server: ChildProcess = spawn(
    process.execPath,
    [join(root, 'bin/ringfence.js'), 'server', '--data', data],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RINGFENCE_INITIAL_ADMIN_TOKEN: ADMIN, RINGFENCE_LOG_LEVEL: 'info' },
    },
  );
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      server.stdout?.on('data', (c) => {
        out += c;
        const m = /"address":"(http:\/\/[^"]+)"/.exec(out);
        if (m) resolve(m[1]);
      });
      server.once('exit', (code) => reject(new Error(`server exited ${code}: ${out.slice(-500)}`)));
    });
    const conn: Conn = { server: url, token: ADMIN };
    const pid = server.pid as number;
    say(`  server pid ${pid} at ${url}; enrolling ${HELD} devices …`);
    const tok = await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: HELD });
    const tokens: string[] = new Array(HELD);
    const keep = new Agent({ keepAlive: true, maxSockets: 32 });
    const t0 = Date.now();
    await pool(
      Array.from({ length: HELD }, (_, i) => i),
      32,
      async (i) => {
        const res = await fetch(new URL('/v1/enroll', url), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ token: tok.token, name: `w-${i}` }),
        });
        if (!res.ok) throw new Error(`enroll ${res.status}: ${await res.text()}`);
        tokens[i] = ((await res.json()) as { device_token: string }).device_token;
      },
    );
    keep.destroy();
    say(`  enrolled in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // A device that has checked in to nothing is told nothing: its tag is that of an empty answer.
    const tag = desiredTag([]);
    await sleep(2000); // let the enrollment burst's garbage settle before the baseline
    const before = usage(pid);
    const noAgent = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
    const answers: Array<Promise<{ status: number; body: Record<string, unknown> }>> = [];
    const t1 = Date.now();
    for (let i = 0; i < HELD; i++) {
      answers.push(
        post(url, '/v1/wait', tokens[i], { tag, seconds: 25 }, `127.0.0.${1 + (i % ADDRESSES)}`, noAgent),
      );
      if (i % 500 === 499) await sleep(20); // do not flood the accept queue
    }
    await until(async () => (await gauge(url, 'ringfence_waits_held')) >= HELD, `${HELD} held waits`);
    const heldMs = Date.now() - t1;
    const after = usage(pid);
    // One operator action notifies every device: a hold by selector (one transaction over all of them).
    const t2 = performance.now();
    let actionMs = 0;
    const action = api(conn, 'POST', '/v1/admin/fleet/hold', { selector: 'name!=nobody' }).then(() => {
      actionMs = performance.now() - t2;
    });
    const arrived: number[] = [];
    const results = await Promise.all(
      answers.map(async (a) => {
        const r = await a;
        arrived.push(performance.now());
        return r;
      }),
    );
    const allMs = performance.now() - t2;
    // The first answer comes right after the hold committed and notified: first → last is the fan-out itself.
    const fanOutMs = Math.max(...arrived) - Math.min(...arrived);
    await action;
    const changed = results.filter((r) => r.status === 200 && r.body.changed === true).length;
    noAgent.destroy();
    const perHeldKb = (after.rssKb - before.rssKb) / HELD;
    const r = {
      held: HELD,
      addresses: ADDRESSES,
      seconds_to_hold_all: heldMs / 1000,
      server_rss_mb_before: mb(before.rssKb),
      server_rss_mb_held: mb(after.rssKb),
      server_fds_before: before.fds,
      server_fds_held: after.fds,
      rss_kb_per_held_wait: Math.round(perHeldKb * 10) / 10,
      fds_per_held_wait: Math.round(((after.fds - before.fds) / HELD) * 100) / 100,
      hold_action_ms: Math.round(actionMs),
      notify_all_answered_ms: Math.round(allMs),
      first_to_last_answer_ms: Math.round(fanOutMs),
      answered_changed: changed,
    };
    say(
      `  ${HELD} held waits: server RSS ${r.server_rss_mb_before} → ${r.server_rss_mb_held} MB ` +
        `(${r.rss_kb_per_held_wait} kB per wait), fds ${before.fds} → ${after.fds} (${r.fds_per_held_wait} per wait)`,
    );
    say(
      `  hold of all ${HELD} (one transaction, then one notify): admin call ${r.hold_action_ms} ms, ` +
        `all waits answered ${r.notify_all_answered_ms} ms after it was sent, first → last answer ` +
        `${r.first_to_last_answer_ms} ms (${changed} answered changed)`,
    );
    return r;
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode === null ? server.once('exit', r) : r(null)));
    rmSync(dir, { recursive: true, force: true });
  }
}

const FOUR_WAVES = `name: four
first_wave_cap: 100%
report_deadline: 120s
waves:
  - name: canary
    size: 1
  - name: early
    size: 10%
  - name: half
    size: 50%
  - name: all
    size: 100%
`;

async function fleetRollout(): Promise<Record<string, unknown>> {
  await buildAgent({ quiet: true });
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-wakefleet-'));
  const srv = await createServer({
    // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
    governance: { fourEyes: false },
    dataDir: join(dir, 'server'),
    logger: pino({ level: 'silent' }),
    pollSeconds: 300,
    initialAdminToken: ADMIN,
  });
  const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
  const conn: Conn = { server: url, token: ADMIN };
  const devices: SpawnedDevice[] = [];
  try {
    const tok = await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: FLEET });
    for (let i = 0; i < FLEET; i++) {
      const d = prepareDevice(join(dir, 'devices'), { name: `f-${i}`, labels: {} }, url, tok.token, {
        pollMs: 300_000,
        probationMs: 0,
      });
      d.proc = spawn(process.execPath, [AGENT_BUNDLE, '--config', d.config], {
        stdio: 'ignore',
        env: { ...process.env, RINGFENCE_LOG_LEVEL: 'warn' },
      });
      devices.push(d);
    }
    await until(async () => {
      const l = await api<Array<{ components: unknown[] }>>(conn, 'GET', '/v1/admin/devices');
      return l.filter((d) => d.components.length > 0).length === FLEET;
    }, 'fleet check-ins');
    await until(() => srv.ctx.wake.hub.held === FLEET, 'every agent holding a wait');
    await importRelease(conn, 'sensor-content', '1.0.0', [writeContent(join(dir, 'c1'), '1.0.0', 4)]);
    await api(conn, 'POST', '/v1/admin/releases/sensor-content@1.0.0/approve', {});
    await api(conn, 'POST', '/v1/admin/plans', { source: FOUR_WAVES });
    const t0 = performance.now();
    const r = await api<{ id: number }>(conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@1.0.0',
      plan: 'four',
    });
    let status = '';
    await until(async () => {
      status = (await api<{ status: string }>(conn, 'GET', `/v1/admin/rollouts/${r.id}`)).status;
      return ['completed', 'halted', 'aborted'].includes(status);
    }, 'rollout end');
    const seconds = (performance.now() - t0) / 1000;
    say(`  ${FLEET} agents, poll 300 s, wake-ups on, 4 waves, no bake: ${status} in ${seconds.toFixed(1)} s`);
    return { fleet: FLEET, poll_seconds: 300, waves: 4, status, seconds };
  } finally {
    await stopAgents(devices);
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

say(`wake-ups (provisional figures on a shared machine):`);
const held = HELD > 0 ? await heldConnections() : null;
const fleet = FLEET > 0 ? await fleetRollout() : null;
mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(root, 'bench', 'results', 'wake.json'),
  `${JSON.stringify({ at: new Date().toISOString(), held, fleet }, null, 2)}\n`,
);
