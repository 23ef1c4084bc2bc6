// Load generator for POST /v1/checkin, run as its own process so it does not share an event loop with the server.
// Usage: tsx bench/checkin-load.ts --url URL --tokens FILE [--concurrency 32] [--seconds 10] [--max 200000]
// Prints one JSON line: requests, errors, seconds, rps, latency percentiles (ms).

import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    tokens: { type: 'string' },
    concurrency: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
    max: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '1' },
  },
});
const url = new URL('/v1/checkin', values.url);
const tokens = JSON.parse(readFileSync(values.tokens!, 'utf8')) as string[];
const concurrency = Number(values.concurrency);
const seconds = Number(values.seconds);
const max = Number(values.max);
const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
const body = JSON.stringify({
  agent_version: 'bench',
  components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle', health: { ok: true } }],
});

function once(token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
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

async function phase(ms: number, limit: number, latencies: number[] | null) {
  const end = performance.now() + ms;
  let sent = 0;
  let errors = 0;
  let next = 0;
  const worker = async () => {
    while (performance.now() < end && sent < limit) {
      sent++;
      const token = tokens[next++ % tokens.length];
      const t0 = performance.now();
      try {
        const status = await once(token);
        if (status !== 200) errors++;
      } catch {
        errors++;
      }
      latencies?.push(performance.now() - t0);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { sent, errors, seconds: (performance.now() - t0) / 1000 };
}

await phase(Number(values.warmup) * 1000, max, null);
const lat: number[] = [];
const r = await phase(seconds * 1000, max, lat);
lat.sort((a, b) => a - b);
const q = (p: number) => Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 100) / 100;
process.stdout.write(
  `${JSON.stringify({
    requests: r.sent,
    errors: r.errors,
    seconds: Math.round(r.seconds * 100) / 100,
    rps: Math.round(r.sent / r.seconds),
    p50_ms: q(0.5),
    p99_ms: q(0.99),
    max_ms: q(1),
    concurrency,
  })}\n`,
);
agent.destroy();
