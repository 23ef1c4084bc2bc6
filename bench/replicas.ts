// Check-in throughput with one and with two server replicas on one PostgreSQL, in one run (issue 11, item 5):
// a throwaway PostgreSQL cluster (Debian's binaries, as the tests start it), two `ringfence server` processes on
// one shared data folder, devices enrolled once, and the load generator (its own process) alternating between
// "replica 1 alone" and "replicas 1 and 2" (connections spread over both) in rounds A B, B A, …; reported: the
// median ratio two/one with its spread, and each side's req/s and p99. All on this machine's cores: the
// database, both replicas and the load generator share them, so this measures what a second replica adds
// when the CPU is shared, not on a second host.
// Usage: npm run bench -- --only replicas [--devices 1000] [--seconds 10] [--concurrency 32] [--rounds 5]
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres } from '../test/helpers/postgres.ts';
import { compareLoad } from './load-generator.ts';
import { round, spread } from './stats.ts';

const root = new URL('..', import.meta.url).pathname;
const BIN = join(root, 'bin', 'ringfence.js');
const ADMIN = `adm-${'0123456789abcdef'.repeat(3)}`;

export interface ReplicaOptions {
  devices: number;
  seconds: number;
  concurrency: number;
  rounds: number;
  say: (line: string) => void;
}

/** Starts one replica; resolves with its address once it listens. */
function replica(data: string, url: string, procs: ChildProcess[]): Promise<string> {
  const p = spawn(process.execPath, [BIN, 'server', '--data', data, '--database', url, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // info: the "listening" line carries the address (check-ins themselves are not logged).
    env: { ...process.env, RINGFENCE_INITIAL_ADMIN_TOKEN: ADMIN, RINGFENCE_LOG_LEVEL: 'info' },
    detached: true,
  });
  procs.push(p);
  let err = '';
  p.stderr?.on('data', (b: Buffer) => {
    err = (err + b.toString()).slice(-2000);
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let found = false;
    const timer = setTimeout(() => reject(new Error(`replica did not listen within 120 s: ${err}`)), 120_000);
    p.stdout?.on('data', (b: Buffer) => {
      if (found) return; // drained, not kept
      out = (out + b.toString()).slice(-8000);
      const m = /"address":"(http:\/\/[^"]+)"/.exec(out);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    p.once('exit', (code) => reject(new Error(`replica exited with ${code} before listening: ${err}`)));
  });
}

/** The benchmark; returns the figures saved to results/replicas.json. */
export async function benchReplicas(o: ReplicaOptions) {
  const pg = await startPostgres();
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-replicas-'));
  const procs: ChildProcess[] = [];
  try {
    const data = join(dir, 'server');
    mkdirSync(data, { recursive: true, mode: 0o700 });
    // Devices here check in far faster than any poll interval; only the rate limits are raised.
    writeFileSync(
      join(data, 'server.yaml'),
      'limits:\n  checkin_burst: 100000\n  checkins_per_device_per_minute: 60000\n  enrollment_burst: 1000000\n  connections_per_ip: 100000\n',
      { mode: 0o600 },
    );
    const first = await replica(data, pg.url, procs);
    const second = await replica(data, pg.url, procs);
    const admin = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };
    const tok = (await (
      await fetch(`${first}/v1/admin/enroll-tokens`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ uses: o.devices }),
      })
    ).json()) as { token: string };
    const tokens: string[] = [];
    for (let i = 0; i < o.devices; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, o.devices - i) }, (_, k) =>
          fetch(`${first}/v1/enroll`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ token: tok.token, name: `rb-${i + k}`, labels: { env: 'prod' } }),
          }).then((r) => r.json() as Promise<{ device_token: string }>),
        ),
      );
      for (const b of batch) tokens.push(b.device_token);
    }
    if (tokens.some((t) => !t)) throw new Error('enrollment failed');
    const tokensFile = join(dir, 'tokens.json');
    writeFileSync(tokensFile, JSON.stringify(tokens));
    o.say(
      `replicas: ${o.devices} devices on PostgreSQL; ${o.rounds} rounds alternating one replica and two ` +
        `(connections spread over both), ${round(o.seconds / o.rounds)} s each, ${o.concurrency} connections`,
    );
    const m = await compareLoad({
      urls: [first, `${first},${second}`],
      tokensFile,
      rounds: o.rounds,
      concurrency: o.concurrency,
      seconds: o.seconds,
    });
    const ratios = m.rounds.map((r) => r.b.rps / r.a.rps);
    const result = {
      devices: o.devices,
      concurrency: o.concurrency,
      rounds: m.rounds.map((r) => ({ one: r.a, two: r.b, ratio: round(r.b.rps / r.a.rps, 3) })),
      one_rps: spread(
        m.rounds.map((r) => r.a.rps),
        0,
      ),
      two_rps: spread(
        m.rounds.map((r) => r.b.rps),
        0,
      ),
      one_p99_ms: spread(m.rounds.map((r) => r.a.p99_ms)),
      two_p99_ms: spread(m.rounds.map((r) => r.b.p99_ms)),
      ratio_two_over_one: spread(ratios, 3),
      errors: m.rounds.reduce((s, r) => s + r.a.errors + r.b.errors, 0),
    };
    o.say(
      `replicas: one ${result.one_rps.median} req/s (p99 ${result.one_p99_ms.median} ms), two ${result.two_rps.median} req/s ` +
        `(p99 ${result.two_p99_ms.median} ms); two/one median ×${result.ratio_two_over_one.median} ` +
        `(min–max ${result.ratio_two_over_one.min}–${result.ratio_two_over_one.max}), errors ${result.errors}`,
    );
    return result;
  } finally {
    for (const p of procs)
      try {
        if (p.pid) process.kill(-p.pid, 'SIGKILL');
      } catch {}
    pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
