// Load generator for POST /v1/checkin, run as its own process so it does not share an event loop with the server.
// Usage: tsx bench/checkin-load.ts --url URL --tokens FILE [--concurrency 32] [--seconds 10] [--max 200000]
//   or   tsx bench/checkin-load.ts --url A --url B --rounds 5 ... to compare two servers (a side may be several,
//   --url B1,B2: its requests go to them in turn): after a warm-up of each,
//   it runs --rounds rounds alternating A and B (A B, B A, A B, …, so a slow drift of the machine falls on both),
//   each phase --seconds / --rounds long.
// Prints one JSON line: requests, errors, seconds, rps, latency percentiles (ms); with two URLs,
// { rounds: [{ a, b }, …] } with those figures per phase.

import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    tokens: { type: 'string' },
    concurrency: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '1' },
    max: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '1' },
  },
});
const tokens = JSON.parse(readFileSync(values.tokens!, 'utf8')) as string[];
const concurrency = Number(values.concurrency);
const seconds = Number(values.seconds);
const max = Number(values.max);
const body = JSON.stringify({
  agent_version: 'bench',
  components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle', health: { ok: true } }],
});
// A side may be several servers (`--url A,B`: replicas): its requests go to them in turn.
const targets = (values.url ?? []).map((side) => {
  const servers = side.split(',').map((u) => ({
    url: new URL('/v1/checkin', u),
    agent: new Agent({ keepAlive: true, maxSockets: concurrency }),
  }));
  let turn = 0;
  return { servers, next: () => servers[turn++ % servers.length] };
});
if (targets.length < 1 || targets.length > 2) throw new Error('--url once, or twice to compare');
type Target = (typeof targets)[number];

function once(side: Target, token: string): Promise<number> {
  const t = side.next();
  return new Promise((resolve, reject) => {
    const req = request(
      t.url,
      {
        method: 'POST',
        agent: t.agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends check-ins to t for ms (at most limit), concurrency in flight; figures of the phase when measured. */
async function phase(t: Target, ms: number, limit: number, measure: boolean) {
  const end = performance.now() + ms;
  const lat: number[] = [];
  let sent = 0;
  let errors = 0;
  let next = 0;
  const worker = async () => {
    while (performance.now() < end && sent < limit) {
      sent++;
      const token = tokens[next++ % tokens.length];
      const t0 = performance.now();
      try {
        const status = await once(t, token);
        if (status !== 200) errors++;
      } catch {
        errors++;
      }
      if (measure) lat.push(performance.now() - t0);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const s = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 100) / 100;
  return {
    requests: sent,
    errors,
    seconds: Math.round(s * 100) / 100,
    rps: Math.round(sent / s),
    p50_ms: q(0.5),
    p99_ms: q(0.99),
    max_ms: q(1),
    concurrency,
  };
}

for (const t of targets) await phase(t, Number(values.warmup) * 1000, max, false);
if (targets.length === 1) {
  process.stdout.write(`${JSON.stringify(await phase(targets[0], seconds * 1000, max, true))}\n`);
} else {
  const rounds = Math.max(1, Number(values.rounds));
  const ms = (seconds * 1000) / rounds;
  const out = [];
  for (let k = 0; k < rounds; k++) {
    // A B, B A, A B, …: neither side always runs first (or last) in a round.
    const first = k % 2 === 0 ? 0 : 1;
    const r: Array<Awaited<ReturnType<typeof phase>>> = [];
    r[first] = await phase(targets[first], ms, max, true);
    r[1 - first] = await phase(targets[1 - first], ms, max, true);
    out.push({ first: first === 0 ? 'a' : 'b', a: r[0], b: r[1] });
  }
  process.stdout.write(`${JSON.stringify({ rounds: out, phase_seconds: ms / 1000 })}\n`);
}
for (const side of targets) for (const t of side.servers) t.agent.destroy();
