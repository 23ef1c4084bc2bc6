// Load generators for the load-isolation bench (`npm run bench -- --only abuse`, driven by bench/run.ts). Each
// role runs as its own process, so neither shares an event loop with the server it measures.
//
//   --role honest: honest devices check in once per round (rounds paced at --round-ms, bounded concurrency,
//     keep-alive), two unmeasured warm-up rounds before --start-at, then --rounds measured rounds. Prints one
//     JSON line: latency percentiles (ms) and answers by status.
//   --role abuser: one enrolled device misbehaving from --start-at until its stdin closes or --seconds pass
//     (with --windows 0-4000,8000-12000: only in those windows, ms after --start-at, dropping its slow
//     connections at the end of each, so a bench can alternate quiet and abuse phases):
//     (a) check-ins carrying 256 reports for transactions it was never offered, as fast as it can;
//     (b) check-ins with label maps that grow each time; (c) slow connections sending partial headers, from
//     --slow-address; (d) check-ins with random bad tokens. Prints "attacking" once started, then one JSON line
//     with what it sent and how it was answered (after a "ready" line once set up). --vectors reports,labels,slow,bad-tokens picks the attacks.
// Every loop is bounded in count and in time.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    url: { type: 'string' },
    // honest
    tokens: { type: 'string' },
    rounds: { type: 'string', default: '10' },
    'round-ms': { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '64' },
    phases: { type: 'string', default: '' },
    // both: wall-clock time (ms since epoch) at which the measured part starts
    'start-at': { type: 'string', default: '0' },
    // abuser
    token: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    address: { type: 'string', default: '127.0.0.1' },
    'slow-address': { type: 'string', default: '127.0.0.2' },
    slow: { type: 'string', default: '2000' },
    'max-requests': { type: 'string', default: '200000' },
    vectors: { type: 'string', default: 'reports,labels,slow,bad-tokens' },
    windows: { type: 'string', default: '' },
  },
});

const base = new URL(values.url!);
const startAt = Number(values['start-at']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);

/** One POST with a keep-alive agent; resolves with the status (0 on a network error) and the latency. */
function post(
  agent: Agent,
  path: string,
  token: string,
  body: string,
  localAddress?: string,
): Promise<{ status: number; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = request(
      {
        host: base.hostname,
        port: base.port,
        path,
        method: 'POST',
        agent,
        localAddress,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
        res.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
      },
    );
    req.setTimeout(30_000, () => req.destroy());
    req.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
    req.end(body);
  });
}

const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return Math.round((u.user + u.system) / 10_000) / 100;
};

const pct = (sorted: number[], p: number) =>
  sorted.length === 0
    ? 0
    : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 100) / 100;

/** Latency percentiles and answers of a set of check-ins. */
function figures(lat: number[], statuses: Record<string, number>) {
  const all = [...lat].sort((a, b) => a - b);
  return {
    requests: all.length,
    statuses,
    p50_ms: pct(all, 0.5),
    p90_ms: pct(all, 0.9),
    p99_ms: pct(all, 0.99),
    max_ms: pct(all, 1),
  };
}
const addStatuses = (into: Record<string, number>, from: Record<string, number>) => {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  return into;
};

async function honest() {
  const tokens = JSON.parse(readFileSync(values.tokens!, 'utf8')) as string[];
  const rounds = Number(values.rounds);
  const roundMs = Number(values['round-ms']);
  const concurrency = Number(values.concurrency);
  // --phases qaaq…: the measured rounds fall into that many equal phases, each of one kind (the caller's labels,
  // e.g. q = quiet, a = under abuse); figures are also given per phase and pooled per kind.
  const phases = values.phases ? [...values.phases] : [];
  const perPhase = phases.length ? rounds / phases.length : rounds;
  if (phases.length && !Number.isInteger(perPhase))
    throw new Error('--rounds must be a multiple of --phases');
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const body = JSON.stringify({ components: [{ name: 'app', version: '1', state: 'idle' }] });

  /** Every device checks in once, at most `concurrency` in flight. */
  async function round(lat: number[] | null, statuses: Record<string, number>) {
    let next = 0;
    const worker = async () => {
      while (next < tokens.length) {
        const token = tokens[next++];
        const r = await post(agent, '/v1/checkin', token, body);
        if (lat) {
          lat.push(r.ms);
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }

  // Warm-up, two rounds: connections, JIT, the devices' component rows (with one, the first measured round still
  // ran 2–3× the later ones' p99).
  await round(null, {});
  await round(null, {});
  await sleep(startAt - Date.now());
  const cpu0 = process.cpuUsage();
  const perRound: Array<{
    lat: number[];
    statuses: Record<string, number>;
    p50_ms: number;
    p99_ms: number;
    seconds: number;
    cpu_s: number;
  }> = [];
  let late = 0;
  const t0 = performance.now();
  for (let k = 0; k < rounds; k++) {
    // Rounds are paced: each device checks in once per round, well within its per-device rate.
    const due = t0 + k * roundMs;
    if (performance.now() > due + 50) late++;
    await sleep(due - performance.now());
    const r0 = performance.now();
    const c0 = process.cpuUsage();
    const lat: number[] = [];
    const statuses: Record<string, number> = {};
    await round(lat, statuses);
    const sorted = [...lat].sort((a, b) => a - b);
    perRound.push({
      lat,
      statuses,
      p50_ms: pct(sorted, 0.5),
      p99_ms: pct(sorted, 0.99),
      seconds: (performance.now() - r0) / 1000,
      cpu_s: cpuSeconds(c0),
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  const pool = (rs: typeof perRound) => ({
    ...figures(
      rs.flatMap((r) => r.lat),
      rs.reduce((s, r) => addStatuses(s, r.statuses), {} as Record<string, number>),
    ),
    cpu_s: Math.round(rs.reduce((s, r) => s + r.cpu_s, 0) * 100) / 100,
  });
  const byPhase = phases.map((kind, j) => ({
    kind,
    ...pool(perRound.slice(j * perPhase, (j + 1) * perPhase)),
  }));
  const byKind = Object.fromEntries(
    [...new Set(phases)].map((kind) => [
      kind,
      pool(perRound.filter((_, k) => phases[Math.floor(k / perPhase)] === kind)),
    ]),
  );
  out({
    devices: tokens.length,
    rounds,
    round_ms: roundMs,
    concurrency,
    seconds: Math.round(seconds * 100) / 100,
    rounds_started_late: late,
    ...pool(perRound),
    cpu_s: cpuSeconds(cpu0),
    per_round: perRound.map(({ lat, statuses, ...r }) => ({
      ...r,
      seconds: Math.round(r.seconds * 100) / 100,
    })),
    ...(phases.length ? { per_phase: byPhase, by_kind: byKind } : {}),
  });
}

async function abuser() {
  const token = values.token!;
  const deadline = Date.now() + Number(values.seconds) * 1000;
  const maxRequests = Number(values['max-requests']);
  const address = values.address!;
  let stopping = false;
  process.stdin.on('end', () => {
    stopping = true;
  });
  process.stdin.on('error', () => {
    stopping = true;
  });
  process.stdin.resume();
  const over = () => stopping || Date.now() >= deadline;
  // Attack windows (absolute ms since epoch); the whole run when none is given.
  const windows = values.windows
    ? values.windows.split(',').map((w) => w.split('-').map((x) => startAt + Number(x)) as [number, number])
    : [[startAt, deadline] as [number, number]];
  let windowEnd = deadline;
  const stop = () => over() || Date.now() >= windowEnd;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  let sent = 0;
  const tally = () => ({ sent: 0, statuses: {} as Record<string, number> });
  const counts = { reports: tally(), labels: tally(), bad_tokens: tally() };
  const send = async (kind: keyof typeof counts, tok: string, body: string) => {
    sent++;
    const r = await post(agent, '/v1/checkin', tok, body, address);
    counts[kind].sent++;
    counts[kind].statuses[r.status] = (counts[kind].statuses[r.status] ?? 0) + 1;
  };
  const components = [{ name: 'app', version: '1', state: 'idle' }];
  const vectors = new Set(values.vectors!.split(','));

  // (a) 256 reports per check-in for transactions never offered: random ids, and random versions so that no
  // two reports share the server's per-check-in "was this offered?" answer. A pool of bodies is built before the
  // attack starts: the abuser's own CPU would otherwise compete with the server on a small machine, which a real
  // attacker (elsewhere) would not. Reusing a body changes nothing for the server: nothing unoffered is stored.
  const reportsBody = () =>
    JSON.stringify({
      components,
      reports: Array.from({ length: 256 }, () => ({
        txn_id: randomUUID(),
        component: 'app',
        version: `9.${randomBytes(4).readUInt32BE(0)}`,
        outcome: 'failed',
        class: 'health',
        reason: 'made up',
        detail: { attempt: 1 },
      })),
    });
  const reportPool = vectors.has('reports') ? Array.from({ length: 512 }, reportsBody) : [];
  let nextReport = 0;
  // (b) label maps that grow by 4 entries of 200 bytes each time (~0.9 MB at most, under the body limit).
  const entries = Array.from({ length: 4000 }, (_, i) => `"k${i}":"${'v'.repeat(200)}"`);
  const head = JSON.stringify({ components }).slice(0, -1);
  let labelEntries = 0;
  const labelsBody = () => {
    labelEntries = labelEntries >= entries.length ? 4 : labelEntries + 4;
    return `${head},"labels":{${entries.slice(0, labelEntries).join(',')}}}`;
  };
  const bad = JSON.stringify({ components });

  // (c) slow connections: partial headers, one more header line a second, never finished.
  const slowTarget = Number(values.slow);
  // Bounded: at most this many connections over the whole run (ten times the target per attack window).
  const slowBudget = slowTarget * 10 * windows.length;
  const slow = {
    opened: 0,
    open_now: 0,
    peak_open: 0,
    refused_fast: 0,
    closed_later: 0,
    lifetimes_ms: [] as number[],
  };
  const live = new Set<Socket>();
  const openSlow = () => {
    if (stop() || slow.opened >= slowBudget) return;
    slow.opened++;
    const t0 = performance.now();
    let ticker: NodeJS.Timeout | undefined;
    const s = connect({ host: base.hostname, port: Number(base.port), localAddress: values['slow-address'] });
    live.add(s);
    s.on('connect', () => {
      slow.open_now++;
      slow.peak_open = Math.max(slow.peak_open, slow.open_now);
      s.write(`POST /v1/checkin HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: application/json\r\n`);
      let n = 0;
      ticker = setInterval(() => s.write(`X-Slow-${n++}: a\r\n`), 1000);
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearInterval(ticker);
      live.delete(s);
      if (slow.open_now > 0 && ticker) slow.open_now--;
      const ms = performance.now() - t0;
      if (stop()) return; // closed by us at the end (of the run or of a window)
      if (ms < 1000) slow.refused_fast++;
      else {
        slow.closed_later++;
        if (slow.lifetimes_ms.length < 10_000) slow.lifetimes_ms.push(ms);
      }
      setTimeout(openSlow, 1000).unref(); // keep the pressure on: reopen
    });
  };

  const cpu0 = process.cpuUsage();
  let attackMs = 0;
  out('ready'); // set up (its start-up and body pool cost CPU): the caller may start the honest devices now
  let announced = false;
  const loop = (n: number, fn: () => Promise<void>) =>
    Promise.all(
      Array.from({ length: n }, async () => {
        while (!stop() && sent < maxRequests) await fn();
      }),
    );
  for (const [from, to] of windows) {
    if (over()) break;
    await sleep(from - Date.now());
    if (over()) break;
    windowEnd = Math.min(to, deadline);
    if (!announced) out('attacking');
    announced = true;
    const w0 = performance.now();
    const slowOpening = (async () => {
      for (let i = 0; vectors.has('slow') && i < slowTarget && !stop(); i++) {
        openSlow();
        if (i % 100 === 99) await sleep(10);
      }
    })();
    await Promise.all([
      loop(vectors.has('reports') ? 8 : 0, () =>
        send('reports', token, reportPool[nextReport++ % reportPool.length]),
      ),
      loop(vectors.has('labels') ? 2 : 0, () => send('labels', token, labelsBody())),
      loop(vectors.has('bad-tokens') ? 4 : 0, () =>
        send('bad_tokens', `dev_${randomBytes(24).toString('base64url')}`, bad),
      ),
      slowOpening,
    ]);
    // Wait (bounded) for the end of the window, stdin to close or the deadline, then drop every slow connection.
    while (!stop()) await sleep(50);
    for (const s of live) s.destroy();
    attackMs += performance.now() - w0;
  }
  while (!over()) await sleep(50);
  const seconds = attackMs / 1000;
  for (const s of live) s.destroy();
  agent.destroy();
  process.stdin.destroy(); // nothing left to wait for: the process ends once this line is printed
  const life = slow.lifetimes_ms.sort((a, b) => a - b);
  out({
    vectors: [...vectors],
    seconds: Math.round(seconds * 100) / 100,
    cpu_s: cpuSeconds(cpu0),
    requests: sent,
    ...counts,
    slow: {
      target: slowTarget,
      address: values['slow-address'],
      opened: slow.opened,
      peak_open: slow.peak_open,
      refused_fast: slow.refused_fast,
      closed_later: slow.closed_later,
      closed_later_median_s: Math.round(pct(life, 0.5) / 100) / 10,
    },
  });
}

if (values.role === 'honest') await honest();
else if (values.role === 'abuser') await abuser();
else throw new Error('--role honest|abuser');
