// Device-side health checks against real things: an HTTP server, TCP ports, files and shell commands.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadAgentConfig } from '../src/agent/config.ts';
import { runCheck } from '../src/agent/health.ts';
import { until } from './helpers/server.ts';

/** Whether a process is alive and not a zombie (a killed child waiting to be reaped is gone for good). */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
// A generous timeout for the checks that are not about timing out: a busy machine must not fail them.
const base = { timeout: 10_000, interval: 100, retries: 0 };

describe('health checks', () => {
  let dir: string;
  let http: Server;
  let url: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-health-'));
    http = createServer((req, res) => {
      if (req.url === '/hang') return; // never answers
      if (req.url === '/down') {
        res.writeHead(503).end('starting');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"up","threads":4}');
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
  });
  after(() => {
    http.closeAllConnections();
    http.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const run = (c: Parameters<typeof runCheck>[0]) => runCheck(c, dir, {}, sleep);

  it('http: status, body match, wrong status, hang fails by timeout', async () => {
    assert.equal(
      (await run({ ...base, name: 'h', http: `${url}/`, status: 200, body: '"status":"up"' })).ok,
      true,
    );
    const mismatch = await run({ ...base, name: 'h', http: `${url}/`, status: 200, body: 'down' });
    assert.equal(mismatch.ok, false);
    assert.match(mismatch.output, /does not match/);
    const down = await run({ ...base, name: 'h', http: `${url}/down`, status: 200 });
    assert.equal(down.ok, false);
    assert.match(down.output, /HTTP 503/);
    const hang = await run({ ...base, name: 'h', http: `${url}/hang`, status: 200, timeout: 300 });
    assert.equal(hang.ok, false);
    assert.match(hang.output, /timed out after 300 ms/);
    assert.ok(
      hang.durationMs >= 300 && hang.durationMs < 20_000,
      `${hang.durationMs} ms: cut at the timeout`,
    );
  });

  it('tcp: an open port passes, a closed one fails', async () => {
    const srv = createTcpServer((s) => s.end());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    assert.equal((await run({ ...base, name: 't', tcp: `127.0.0.1:${port}` })).ok, true);
    await new Promise<void>((r) => srv.close(() => r()));
    const closed = await run({ ...base, name: 't', tcp: `127.0.0.1:${port}` });
    assert.equal(closed.ok, false);
    assert.match(closed.output, /cannot connect/);
  });

  it('file: exists, content matches, missing fails', async () => {
    const f = join(dir, 'ready');
    writeFileSync(f, 'state=ready\n');
    assert.equal((await run({ ...base, name: 'f', file: f })).ok, true);
    assert.equal((await run({ ...base, name: 'f', file: f, contains: '^state=ready$' })).ok, true);
    assert.equal((await run({ ...base, name: 'f', file: f, contains: '^state=failed$' })).ok, false);
    const missing = await run({ ...base, name: 'f', file: join(dir, 'nope') });
    assert.equal(missing.ok, false);
    assert.match(missing.output, /ENOENT/);
  });

  it('exec: a hanging check fails by timeout (its children killed), a missing command fails', async () => {
    // The timeout leaves a busy machine seconds to start the shell and print its first line; the hung child
    // (sleep 30) records its pid so the test can see it killed, not merely abandoned.
    const pidFile = join(dir, 'hung.pid');
    const t0 = Date.now();
    const hang = await run({
      ...base,
      name: 'hang',
      exec: `echo starting; sleep 30 & echo $! > ${pidFile}; wait`,
      timeout: 4000,
    });
    assert.equal(hang.ok, false);
    assert.match(hang.output, /starting[\s\S]*timed out after 4000 ms/);
    assert.ok(Date.now() - t0 < 25_000, 'did not wait for the hung command');
    const hungPid = Number(readFileSync(pidFile, 'utf8'));
    await until(
      async () => processAlive(hungPid),
      (up) => !up,
      60_000,
      'the hung check child killed',
    );
    const missing = await run({ ...base, name: 'missing', exec: '/nonexistent/self-test --probe' });
    assert.equal(missing.ok, false);
    assert.match(missing.output, /exit 127 \(command not found\)/);
    const crash = await run({ ...base, name: 'crash', exec: 'echo "panic: bad content" >&2; exit 3' });
    assert.equal(crash.ok, false);
    assert.match(crash.output, /panic: bad content[\s\S]*exit 3/);
  });

  it('retries: a check that passes after a slow start; one that never does reports its last output', async () => {
    const f = join(dir, 'late');
    setTimeout(() => writeFileSync(f, 'up'), 250);
    const late = await run({ ...base, name: 'late', file: f, retries: 5, interval: 100 });
    assert.equal(late.ok, true);
    const never = await run({
      ...base,
      name: 'never',
      exec: 'echo not yet; exit 1',
      retries: 2,
      interval: 150,
    });
    assert.equal(never.ok, false);
    assert.ok(never.durationMs >= 300, `${never.durationMs} ms: retried twice, 150 ms apart`);
    assert.match(never.output, /not yet/);
  });

  it('config: every check type parses, with defaults; a bad one names file:line:field', () => {
    const cfg = join(dir, 'agent.yaml');
    /** An agent config with one `web` component whose health list holds `checks`, one per line. */
    const writeWebChecks = (checks: string[]) =>
      writeFileSync(
        cfg,
        `state_dir: ./state
components:
  - name: web
    backend: { type: dir, path: ./app }
    health:
${checks.map((c) => `      - ${c}\n`).join('')}`,
      );
    writeWebChecks([
      '{ name: cmd, exec: "true" }',
      '{ name: api, http: "http://127.0.0.1:1/health", body: ok, timeout: 2s, retries: 3, interval: 1s }',
      '{ name: port, tcp: "127.0.0.1:5432" }',
      '{ name: marker, file: ./ready, contains: "^ok$" }',
    ]);
    const c = loadAgentConfig(cfg).components[0];
    assert.equal(c.health.length, 4);
    assert.deepEqual(
      c.health.map((h) => [h.timeout, h.retries]),
      [
        [10_000, 0],
        [2000, 3],
        [10_000, 0],
        [10_000, 0],
      ],
    );
    assert.equal((c.health[3] as { file: string }).file, join(dir, 'ready'));
    writeWebChecks(['{ name: port, tcp: "no-port" }']);
    assert.throws(() => loadAgentConfig(cfg), /agent\.yaml:\d+: components\.0\.health\.0/);
  });
});
