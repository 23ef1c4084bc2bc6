// `npm run bench:agent`: the device agent as a real process against a real server on loopback.
// All figures are for the shipped device build, dist/ringfence-agent.mjs on plain node (built first when
// missing or older than src/): apply-to-commit latency and the agent's peak RSS for a 1 MiB and a 50 MiB
// release, rollback latency (failing health check → `current` switched back) and idle RSS (target < 60 MB);
// each a median of --runs runs. Idle RSS via bin/ringfence.js (tsx, whole CLI) is printed for comparison.
// Beside it, in alternating rounds: Mender 3.4 standalone (bench/mender.ts) installing and committing a signed
// single-file artifact of the same payload, with the median Ringfence/Mender time ratio and its spread.
// The apply's peak RSS is the agent's VmHWM reset just before the offer. The agent runs with the node flags
// of docs/examples/ringfence-agent.service, and the server has TUF keys, so every apply is verified.
// `--idle-only` measures idle RSS alone. Writes bench/results/agent.json (not with --idle-only).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { AGENT_BUNDLE, buildAgent } from '../scripts/build-agent.ts';
import { api, type Conn } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { prepareDevice, type SpawnedDevice, startAgent, stopAgents } from '../src/demo/fleet.ts';
import { createServer } from '../src/server/app.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { type MenderRun, menderMissing, setUpMender } from './mender.ts';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, 'idle-only': { type: 'boolean', default: false } },
});
const RUNS = Number(values.runs);
const TARGET_IDLE_MB = 60;
/** Issue 11: the agent's peak RSS during a 50 MiB apply. */
const TARGET_APPLY_MB = 60;
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Resets a process's peak RSS (VmHWM) to its current RSS (Linux: `5` in /proc/<pid>/clear_refs). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Reads a field (kB) of /proc/<pid>/status: VmRSS now, VmHWM the peak. */
function procKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) : Number.NaN;
}

interface LogLine {
  time: number;
  msg: string;
  version?: string;
}
function logLines(d: SpawnedDevice): LogLine[] {
  const f = join(d.dir, 'agent.log');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

async function waitFor<T>(fn: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

/** Newest modification time of any file under a folder. */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  return t;
}

/** The shipped build, rebuilt when missing or older than the sources it is made of. */
async function shippedBuild(): Promise<string> {
  const src = new URL('../src', import.meta.url).pathname;
  if (!existsSync(AGENT_BUNDLE) || statSync(AGENT_BUNDLE).mtimeMs < newest(src)) {
    await buildAgent({ quiet: true });
    console.log(`built ${AGENT_BUNDLE}`);
  }
  return AGENT_BUNDLE;
}

/** The node flags the shipped systemd unit runs the agent with (docs/examples/ringfence-agent.service). */
function unitNodeFlags(): string[] {
  const unit = readFileSync(new URL('../docs/examples/ringfence-agent.service', import.meta.url), 'utf8');
  const m = /^ExecStart=\S*node((?:\s+--\S+)*)\s+\S*ringfence-agent\.mjs/m.exec(unit);
  if (!m)
    throw new Error('no ExecStart running ringfence-agent.mjs in docs/examples/ringfence-agent.service');
  return m[1].split(/\s+/).filter(Boolean);
}
const NODE_FLAGS = unitNodeFlags();

/** Runs an agent from the shipped build as the unit does, logging to agent.log like the CLI's fleet does. */
function startShipped(d: SpawnedDevice, bundle: string): void {
  const log = openSync(join(d.dir, 'agent.log'), 'a');
  d.proc = spawn(process.execPath, [...NODE_FLAGS, bundle, '--config', d.config], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info' },
  });
}

function content(dir: string, version: string, threads: number, size: number): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'service.conf'), `# ${version}\nthreads=${threads}\n`);
  if (size > 0) writeFileSync(join(dir, 'payload.bin'), randomBytes(size));
  return dir;
}

async function main() {
  const root = mkdtempSync(join(tmpdir(), 'rf-bench-agent-'));
  // Organisation keys, so every apply is verified with TUF (signed metadata), as Mender verifies its signature.
  TufRepository.init(join(root, 'server'));
  const srv = await createServer({
    // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
    governance: { fourEyes: false },
    dataDir: join(root, 'server'),
    logger: pino({ level: 'silent' }),
    pollSeconds: 1,
    tickMs: 50,
  });
  const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
  const conn: Conn = { server: url, token: srv.newAdminToken! };
  const devices: SpawnedDevice[] = [];
  try {
    const sizes = [
      { label: '1 MiB', version: 'one-mib', bytes: MiB },
      { label: '50 MiB', version: 'fifty-mib', bytes: 50 * MiB },
    ];
    for (const s of sizes)
      await importRelease(conn, 'sensor-content', s.version, [
        content(join(root, 'c', s.version), s.version, 4, s.bytes),
      ]);
    await importRelease(conn, 'sensor-content', 'bad', [content(join(root, 'c', 'bad'), 'bad', 0, 0)]);
    for (const v of [...sizes.map((s) => s.version), 'bad'])
      await api(conn, 'POST', `/v1/admin/releases/sensor-content@${v}/approve`, {});
    const token = (await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: 100 }))
      .token;

    const bundle = await shippedBuild();
    const device = async (name: string, via: 'shipped' | 'tsx' = 'shipped') => {
      const d = prepareDevice(join(root, 'devices'), { name, labels: { dev: name } }, url, token, {
        pollMs: 200,
        probationMs: 0, // one round of checks: measures the machinery, not a watch window
      });
      devices.push(d);
      if (via === 'shipped') startShipped(d, bundle);
      else startAgent(d);
      await waitFor(
        () => (logLines(d).some((l) => l.msg === 'enrolled') ? true : undefined),
        20_000,
        `${name} enrolled`,
      );
      return d;
    };
    const pin = (d: SpawnedDevice, v: string) =>
      api(conn, 'POST', '/v1/admin/fleet/pin', { selector: `dev=${d.name}`, release: `sensor-content@${v}` });
    const span = async (d: SpawnedDevice, version: string, endMsg: string) => {
      const [a, b] = await waitFor(
        () => {
          const lines = logLines(d);
          const s = lines.find((l) => l.msg === 'transaction started' && l.version === version);
          const e = lines.find((l) => l.msg === endMsg && lines.indexOf(l) > lines.indexOf(s!));
          return s && e ? [s, e] : undefined;
        },
        60_000,
        `${d.name}: ${version} ${endMsg}`,
      );
      return { ms: b.time - a.time, end: b.time };
    };
    // Idle: enrolled and checking in every 200 ms with nothing to do. Measured after 10 s: the first seconds
    // still hold start-up garbage (config parsing, YAML) that V8 gives back at its next full collection.
    const idleRss = async (name: string, via: 'shipped' | 'tsx') => {
      const d = await device(name, via);
      await sleep(10_000);
      const mb = procKb(d.proc!.pid!, 'VmRSS') / 1024;
      await stopAgents([d]);
      return mb;
    };

    const menderWhy = values['idle-only'] ? 'not measured (--idle-only)' : menderMissing();
    const mender = menderWhy
      ? null
      : setUpMender(
          join(root, 'mender'),
          sizes.map((x) => ({ bytes: x.bytes, payload: join(root, 'c', x.version, 'payload.bin') })),
        );
    if (menderWhy) console.log(`Mender: ${menderWhy}`);

    const idle: number[] = [];
    const idleTsx: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      idle.push(await idleRss(`idle-${r}`, 'shipped'));
      idleTsx.push(await idleRss(`idle-tsx-${r}`, 'tsx'));
    }
    const rows: Array<[string, string, string]> = [];
    const build = `node ${NODE_FLAGS.join(' ')} dist/ringfence-agent.mjs (as docs/examples/ringfence-agent.service), TUF-verified`;
    const results: Record<string, unknown> = { build, node_flags: NODE_FLAGS };
    if (!values['idle-only']) {
      const rollback: number[] = [];
      for (const s of sizes) {
        const lat: number[] = [];
        const rss: number[] = [];
        const startRss: number[] = [];
        const mLat: number[] = [];
        const mRss: number[] = [];
        const ratios: number[] = [];
        for (let r = 0; r < RUNS; r++) {
          // Alternating rounds (Ringfence then Mender, Mender then Ringfence) so a busy spell hits both.
          const menderFirst = r % 2 === 1;
          let m: MenderRun | undefined;
          if (mender && menderFirst) m = await mender.apply(s.bytes);
          const d = await device(`${s.version}-${r}`);
          await sleep(1000);
          // The peak of the apply itself, not of start-up: reset just before the offer, read after the commit.
          const startPeak = procKb(d.proc!.pid!, 'VmHWM') / 1024;
          resetPeak(d.proc!.pid!);
          await pin(d, s.version);
          lat.push((await span(d, s.version, 'committed')).ms);
          if (!existsSync(join(d.dir, 'state', 'tuf', 'timestamp.json')))
            throw new Error(`${d.name}: the apply was not verified with TUF`);
          rss.push(procKb(d.proc!.pid!, 'VmHWM') / 1024);
          startRss.push(startPeak);
          if (s.bytes === MiB) {
            // Rollback latency: from the failing health check's verdict to `current` switched back.
            await pin(d, 'bad');
            const { end } = await span(d, 'bad', 'rolled back');
            const j = JSON.parse(readFileSync(join(d.dir, 'state', 'component-sensor-content.json'), 'utf8'));
            rollback.push(end - j.lastHealth.at);
          }
          await stopAgents([d]);
          if (mender && !menderFirst) m = await mender.apply(s.bytes);
          if (m) {
            mLat.push(Math.round(m.ms));
            mRss.push(m.peakRssMb);
            ratios.push(lat[lat.length - 1] / m.ms);
          }
        }
        results[s.label] = {
          apply_to_commit_ms: median(lat),
          peak_rss_mb: +median(rss).toFixed(1),
          peak_rss_runs: rss.map((x) => +x.toFixed(1)),
          startup_peak_rss_mb: +median(startRss).toFixed(1),
          runs: lat,
          ...(mender
            ? {
                mender_install_commit_ms: median(mLat),
                mender_runs: mLat,
                mender_peak_rss_mb: +median(mRss).toFixed(1),
                ratio_ringfence_to_mender: +median(ratios).toFixed(2),
                ratio_spread: [+Math.min(...ratios).toFixed(2), +Math.max(...ratios).toFixed(2)],
              }
            : {}),
        };
        rows.push([`apply → commit, ${s.label}`, `${median(lat)} ms`, `runs ${lat.join(', ')}`]);
        rows.push([
          `peak RSS during ${s.label} apply`,
          `${median(rss).toFixed(1)} MB`,
          `${s.bytes > MiB ? `target ≤ ${TARGET_APPLY_MB} MB: ${median(rss) <= TARGET_APPLY_MB ? 'met' : 'NOT met'}; ` : ''}runs ${rss.map((x) => x.toFixed(1)).join(', ')}; start-up peak ${median(startRss).toFixed(1)} MB`,
        ]);
        if (mender) {
          rows.push([
            `Mender install + commit, ${s.label}`,
            `${median(mLat)} ms`,
            `runs ${mLat.join(', ')}; Ringfence/Mender ${median(ratios).toFixed(2)} (spread ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`,
          ]);
          rows.push([
            `Mender peak RSS, ${s.label}`,
            `${median(mRss).toFixed(1)} MB`,
            `runs ${mRss.map((x) => x.toFixed(1)).join(', ')}`,
          ]);
        }
      }
      results.rollback_ms = median(rollback);
      rows.push([
        'rollback after failing check (dir)',
        `${median(rollback)} ms`,
        `target < 1000 ms; runs ${rollback.join(', ')}`,
      ]);
    }
    const idleMb = +median(idle).toFixed(1);
    results.idle_rss_mb = idleMb;
    results.idle_rss_target_mb = TARGET_IDLE_MB;
    results.idle_rss_runs = idle.map((x) => +x.toFixed(1));
    results.idle_rss_tsx_cli_mb = +median(idleTsx).toFixed(1);
    rows.push([
      'idle RSS, shipped build',
      `${idleMb} MB`,
      `target < ${TARGET_IDLE_MB} MB: ${idleMb < TARGET_IDLE_MB ? 'met' : 'NOT met'}; runs ${idle.map((x) => x.toFixed(1)).join(', ')}`,
    ]);
    rows.push([
      'idle RSS via bin/ringfence.js (tsx)',
      `${median(idleTsx).toFixed(1)} MB`,
      'for comparison: whole CLI, TypeScript compiled at start-up',
    ]);
    const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
    console.log(`\nagent figures (${RUNS} runs each, median; ${build})`);
    for (const r of rows) console.log(`  ${r[0].padEnd(w[0])}  ${r[1].padStart(w[1])}  ${r[2]}`);
    if (!values['idle-only']) {
      mkdirSync(new URL('results', import.meta.url).pathname, { recursive: true });
      writeFileSync(new URL('results/agent.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
    }
  } finally {
    await stopAgents(devices);
    await srv.close();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
