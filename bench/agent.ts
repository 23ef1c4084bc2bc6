// `npm run bench:agent`: the device agent as a real process against a real server on loopback.
// Apply-to-commit latency and the agent's peak RSS for a 1 MiB and a 50 MiB release, rollback latency
// (failing health check → `current` switched back) and idle RSS; each a median of --runs runs.
// Writes bench/results/agent.json.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { api, type Conn } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { prepareDevice, type SpawnedDevice, startAgent, stopAgents } from '../src/demo/fleet.ts';
import { createServer } from '../src/server/app.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const RUNS = Number(values.runs);
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

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

function content(dir: string, version: string, threads: number, size: number): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'service.conf'), `# ${version}\nthreads=${threads}\n`);
  if (size > 0) writeFileSync(join(dir, 'payload.bin'), randomBytes(size));
  return dir;
}

async function main() {
  const root = mkdtempSync(join(tmpdir(), 'rf-bench-agent-'));
  const srv = await createServer({
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

    const device = async (name: string) => {
      const d = prepareDevice(join(root, 'devices'), { name, labels: { dev: name } }, url, token, {
        pollMs: 200,
        probationMs: 0, // one round of checks: measures the machinery, not a watch window
      });
      devices.push(d);
      startAgent(d);
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

    const results: Record<string, unknown> = {};
    const idle: number[] = [];
    const rollback: number[] = [];
    for (const s of sizes) {
      const lat: number[] = [];
      const rss: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        const d = await device(`${s.version}-${r}`);
        await sleep(2000);
        if (s.bytes === MiB) idle.push(procKb(d.proc!.pid!, 'VmRSS') / 1024);
        await pin(d, s.version);
        lat.push((await span(d, s.version, 'committed')).ms);
        rss.push(procKb(d.proc!.pid!, 'VmHWM') / 1024);
        if (s.bytes === MiB) {
          // Rollback latency: from the failing health check's verdict to `current` switched back.
          await pin(d, 'bad');
          const { end } = await span(d, 'bad', 'rolled back');
          const j = JSON.parse(readFileSync(join(d.dir, 'state', 'component-sensor-content.json'), 'utf8'));
          rollback.push(end - j.lastHealth.at);
        }
        await stopAgents([d]);
      }
      results[s.label] = { apply_to_commit_ms: median(lat), peak_rss_mb: +median(rss).toFixed(1), runs: lat };
      console.log(
        `apply → commit, ${s.label.padEnd(6)}: median ${median(lat)} ms (runs ${lat.join(', ')}); agent peak RSS ${median(rss).toFixed(1)} MB`,
      );
    }
    console.log(
      `rollback after failing check (dir): median ${median(rollback)} ms (runs ${rollback.join(', ')}; target < 1000 ms)`,
    );
    console.log(`agent idle RSS via bin/ringfence.js (tsx, whole CLI): median ${median(idle).toFixed(1)} MB`);
    // The same agent bundled to one plain-JS file (no runtime TypeScript transform, no CLI): what a device would run.
    const bundle = join(root, 'agent.mjs');
    const { build } = await import('esbuild');
    await build({
      stdin: {
        contents: `import pino from 'pino';
import { Agent } from '../src/agent/agent.ts';
import { loadAgentConfig } from '../src/agent/config.ts';
const a = new Agent(loadAgentConfig(process.argv[2]), pino({ level: 'info' }));
process.once('SIGTERM', () => a.stop());
await a.run();`,
        resolveDir: new URL('.', import.meta.url).pathname,
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile: bundle,
      logLevel: 'warning',
      banner: { js: "import{createRequire}from'module';const require=createRequire(import.meta.url);" },
    });
    const idleBundled: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const d = prepareDevice(join(root, 'devices'), { name: `bundled-${r}`, labels: {} }, url, token, {
        pollMs: 200,
      });
      devices.push(d);
      const log = openSync(join(d.dir, 'agent.log'), 'a');
      d.proc = spawn(process.execPath, [bundle, d.config], { stdio: ['ignore', log, log] });
      await waitFor(
        () => (logLines(d).some((l) => l.msg === 'enrolled') ? true : undefined),
        20_000,
        'bundled enrolled',
      );
      await sleep(3000); // idle: checking in every 200 ms with nothing to do
      idleBundled.push(procKb(d.proc.pid!, 'VmRSS') / 1024);
      await stopAgents([d]);
    }
    console.log(
      `agent idle RSS, bundled agent on plain node: median ${median(idleBundled).toFixed(1)} MB (target < 60 MB)`,
    );
    results.rollback_ms = median(rollback);
    results.idle_rss_mb = +median(idle).toFixed(1);
    results.idle_rss_bundled_mb = +median(idleBundled).toFixed(1);
    mkdirSync(new URL('results', import.meta.url).pathname, { recursive: true });
    writeFileSync(new URL('results/agent.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await stopAgents(devices);
    await srv.close();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
