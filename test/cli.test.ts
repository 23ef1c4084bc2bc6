// The CLI and the server as real processes: one-line errors, --json, admin token shown once, graceful SIGTERM.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { BIN } from '../src/demo/fleet.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const run = promisify(execFile);

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

function startServer(dir: string, port: number): Promise<{ proc: ChildProcess; stderr: () => string }> {
  const proc = spawnGroup(process.execPath, [BIN, 'server', '--data', dir, '--port', String(port)], {
    env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info' },
  });
  let err = '';
  let out = '';
  proc.stderr?.on('data', (d) => {
    err += d;
  });
  return new Promise((res, rej) => {
    proc.stdout?.on('data', (d) => {
      out += d;
      if (out.includes('listening')) res({ proc, stderr: () => err });
    });
    proc.once('exit', (c) => rej(new Error(`server exited ${c}: ${err}`)));
  });
}

describe('CLI against a server process', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-cli-'));
  let port: number;
  let env: Record<string, string>;
  let server: { proc: ChildProcess; stderr: () => string };

  before(async () => {
    port = await freePort();
    server = await startServer(join(dir, 'data'), port);
    // stderr and stdout are separate pipes: the token line may arrive after "listening" on a busy machine.
    const token = await until(
      async () => /admin token \(shown once[^:]*\): (\S+)/.exec(server.stderr())?.[1],
      (t) => t !== undefined,
      120_000,
      'the admin token on stderr',
    ).catch(() => undefined);
    assert.ok(token, 'admin token printed on first start');
    env = { RINGFENCE_SERVER: `http://127.0.0.1:${port}`, RINGFENCE_TOKEN: token };
  });
  after(async () => {
    await killProcess(server.proc);
    rmSync(dir, { recursive: true, force: true });
  });

  it('imports, lists and approves releases with --json', async () => {
    writeFileSync(join(dir, 'a.conf'), 'threads=4\n');
    const imp = await cli(
      ['release', 'import', '--component', 'app', '--version', '1.0', join(dir, 'a.conf'), '--json'],
      env,
    );
    assert.equal(imp.code, 0, imp.stderr);
    assert.equal(JSON.parse(imp.stdout).artifacts[0].name, 'a.conf');
    // Four eyes (on by default): the admin imported it, so a second operator, an approver, approves it.
    const reviewer = await cli(['operator', 'add', 'reviewer', '--role', 'approver'], env);
    assert.equal(reviewer.code, 0, reviewer.stderr);
    const mine = await cli(['release', 'approve', 'app@1.0'], env);
    assert.equal(mine.code, 1, 'the importer may not approve');
    assert.match(mine.stderr, /four eyes: admin imported app@1\.0/);
    const approved = await cli(['release', 'approve', 'app@1.0'], {
      ...env,
      RINGFENCE_TOKEN: reviewer.stdout.trim(),
    });
    assert.equal(approved.code, 0, approved.stderr);
    const list = JSON.parse((await cli(['release', 'list', '--json'], env)).stdout);
    assert.deepEqual(
      list.map((r: { component: string; version: string; approved: boolean }) => [
        r.component,
        r.version,
        r.approved,
      ]),
      [['app', '1.0', true]],
    );
  });

  it('fails with one line and a non-zero code on bad input', async () => {
    writeFileSync(join(dir, 'bad.yaml'), 'name: x\nwaves:\n  - name: w\n    size: -3\n');
    const r = await cli(['plan', 'apply', join(dir, 'bad.yaml')], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ringfence: .*bad\.yaml:4: waves\.0\.size: /);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    const noTok = await cli(['release', 'list'], {
      RINGFENCE_SERVER: env.RINGFENCE_SERVER,
      RINGFENCE_TOKEN: 'wrong',
    });
    assert.equal(noTok.code, 3, 'a rejected token is exit code 3 (the contract)');
    assert.match(noTok.stderr, /401 admin token required/);
    const away = await cli(['release', 'list', '--json'], {
      RINGFENCE_SERVER: 'http://127.0.0.1:9',
      RINGFENCE_TOKEN: 'x',
    });
    assert.equal(away.code, 3, 'an unreachable server is exit code 3');
    assert.equal(JSON.parse(away.stdout).error, 'unreachable', 'with --json the error is one JSON object');
    const unknown = await cli(['rollout', 'start', 'app@9', '--plan', 'nope'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /404 no release app@9/);
  });

  it('checks a plan against a fleet file and refuses a too-wide first wave', async () => {
    const fleet = Array.from({ length: 100 }, (_, i) => ({
      ring: i < 2 ? 'canary' : 'none',
      tier: 'ABC'[i % 3],
    }));
    writeFileSync(join(dir, 'fleet.json'), JSON.stringify(fleet));
    writeFileSync(
      join(dir, 'ok.yaml'),
      'name: ok\nwaves:\n  - name: c\n    select: ring=canary\n    size: 2\n  - name: all\n    size: 100%\n',
    );
    const ok = await cli([
      'plan',
      'check',
      join(dir, 'ok.yaml'),
      '--fleet',
      join(dir, 'fleet.json'),
      '--json',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const a = JSON.parse(ok.stdout);
    assert.equal(a.worstCaseExposure, 2);
    assert.deepEqual(
      a.waves.map((w: { devices: number }) => w.devices),
      [2, 98],
    );
    writeFileSync(join(dir, 'wide.yaml'), 'name: wide\nwaves:\n  - name: all\n    size: 50%\n');
    const wide = await cli(['plan', 'check', join(dir, 'wide.yaml'), '--fleet', join(dir, 'fleet.json')]);
    assert.equal(wide.code, 1);
    assert.match(wide.stderr, /over the 5% cap/);
    assert.equal(
      (
        await cli([
          'plan',
          'check',
          join(dir, 'wide.yaml'),
          '--fleet',
          join(dir, 'fleet.json'),
          '--allow-wide',
        ])
      ).code,
      0,
    );
  });

  it('does not show the admin token again and shuts down cleanly on SIGTERM', async () => {
    const exited = new Promise<number | null>((res) => server.proc.once('exit', (c) => res(c)));
    server.proc.kill('SIGTERM');
    assert.equal(await exited, 0);
    const again = await startServer(join(dir, 'data'), port);
    assert.doesNotMatch(again.stderr(), /admin token/);
    const r = await cli(['release', 'list', '--json'], env);
    assert.equal(JSON.parse(r.stdout).length, 1, 'data survived the restart');
    server = again;
  });
});

describe('ringfence demo', { timeout: 400_000 }, () => {
  it('confines a bad release to the first wave and rolls every exposed device back', async () => {
    const r = await cli(['demo', '--devices', '12', '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.deepEqual(last, {
      fleet: 12,
      good: { exposed: 12, succeeded: 12 },
      bad: { exposed: 3, rolled_back: 3, halted: true, halted_after_wave: 'canary' },
    });
  });
});

describe('server configuration file', () => {
  it('is written with defaults on first start, and a bad value is refused with file, line and field', async () => {
    const { loadServerConfig, limitsOf, governanceOf, DEFAULT_GOVERNANCE } = await import(
      '../src/server/config.ts'
    );
    const { DEFAULT_LIMITS } = await import('../src/server/limits.ts');
    const dir = mkdtempSync(join(tmpdir(), 'rf-cfg-'));
    try {
      const first = loadServerConfig(dir);
      assert.equal(first.created, true);
      const { limits: _limits, governance: _governance, tls, oidc, fleet_lock, ...rest } = first.config;
      assert.deepEqual(rest, {
        host: '127.0.0.1',
        port: 8080,
        poll_seconds: 30,
        database: null,
        public_url: null,
        prometheus: null,
      });
      assert.equal(oidc, null, 'single sign-on off by default');
      assert.equal(fleet_lock.enabled, false, 'FleetLock off by default: its endpoints take no token');
      assert.deepEqual(governanceOf(first.config), DEFAULT_GOVERNANCE, 'four eyes on by default');
      assert.equal(tls, null);
      assert.deepEqual(limitsOf(first.config), DEFAULT_LIMITS, 'the written file states the defaults');
      assert.equal(loadServerConfig(dir).created, false);
      // A file without a `limits:` section gets every default limit (it once gave NaN timeouts).
      writeFileSync(join(dir, 'server.yaml'), 'port: 8081\n');
      assert.deepEqual(limitsOf(loadServerConfig(dir).config), DEFAULT_LIMITS);
      writeFileSync(join(dir, 'server.yaml'), 'host: 0.0.0.0\nport: 99999\n');
      assert.throws(() => loadServerConfig(dir), /server\.yaml:2: port: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
