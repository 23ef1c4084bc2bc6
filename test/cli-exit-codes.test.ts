// The command line's contract for scripts (docs/cli.md): exit codes 0 success, 1 refused or failed, 2 usage error,
// 3 server unreachable or token rejected; with --json every error is also one JSON object on stdout; a reader that
// closes the pipe early never gets a stack trace. Real CLI processes against a real server on loopback.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN } from '../src/demo/fleet.ts';
import { VERSION } from '../src/version.ts';
import { guardProcesses, spawnGroup } from './helpers/processes.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const scratch = mkdtempSync(join(tmpdir(), 'rf-exit-'));
// No operator's own settings may leak in: no token, no server, no CLI contexts from the home folder.
const BASE_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  RINGFENCE_TOKEN: '',
  RINGFENCE_SERVER: '',
  RINGFENCE_CONTEXT: '',
  RINGFENCE_CONFIG: join(scratch, 'no-such-config.yaml'),
  HOME: scratch,
  XDG_CONFIG_HOME: join(scratch, 'xdg'),
};
for (const k of ['RINGFENCE_TOKEN', 'RINGFENCE_SERVER', 'RINGFENCE_CONTEXT']) delete BASE_ENV[k];

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...BASE_ENV, ...env } }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? -1) : 0;
      res({ code: typeof code === 'number' ? code : -1, stdout, stderr });
    });
  });
}

/** The --json error object: the last line of stdout. */
function jsonError(r: Run): { error: string; message: string } {
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  const o = JSON.parse(last) as { error: string; message: string };
  assert.equal(typeof o.error, 'string', `error code in ${last}`);
  assert.equal(typeof o.message, 'string', `message in ${last}`);
  assert.deepEqual(Object.keys(o).sort(), ['error', 'message']);
  return o;
}

/**
 * A loopback server that drops every connection at once: the CLI cannot get an answer from it. Held open while
 * used, so no other test can take its port meanwhile (a port merely released could be reused).
 */
function droppingServer(): Promise<{ url: string; close(): void }> {
  return new Promise((res) => {
    const s = createServer((sock) => sock.destroy()).listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      res({ url: `http://127.0.0.1:${port}`, close: () => s.close() });
    });
  });
}

describe('CLI exit codes and JSON errors', { timeout: 180_000 }, () => {
  guardProcesses();
  let ts: TestServer;
  let auth: NodeJS.ProcessEnv;

  before(async () => {
    ts = await startTestServer();
    auth = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
  });
  after(async () => {
    await ts?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('0: --version (plain and --json), --help, and a command that works', async () => {
    const v = await cli(['--version']);
    assert.equal(v.code, 0);
    assert.equal(v.stdout, `${VERSION}\n`);
    assert.equal((await cli(['-V'])).stdout, `${VERSION}\n`);
    assert.deepEqual(JSON.parse((await cli(['--version', '--json'])).stdout), { version: VERSION });
    const h = await cli(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /-V, --version/);
    const list = await cli(['fleet', 'list', '--json'], auth);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), []);
  });

  it('release import --version V still names the release version, not the CLI version', async () => {
    const r = await cli(['release', 'import', '--version'], auth);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--version <v>' argument missing/);
  });

  it('1: the server refused (an unknown rollout), with the server error code under --json', async () => {
    const r = await cli(['rollout', 'status', '999999', '--json'], auth);
    assert.equal(r.code, 1, r.stderr);
    const e = jsonError(r);
    assert.notEqual(e.error, 'usage');
    assert.match(e.message, /404/);
    assert.match(r.stderr, /^ringfence: .*404/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('2: usage errors: unknown command, unknown flag, missing argument, missing token', async () => {
    for (const args of [['no-such-command'], ['fleet', 'list', '--no-such-flag'], ['rollout', 'status']]) {
      const r = await cli([...args, '--json'], auth);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(jsonError(r).error, 'usage', args.join(' '));
    }
    const plain = await cli(['no-such-command']);
    assert.equal(plain.code, 2);
    assert.equal(plain.stdout, '', 'no JSON without --json');
    assert.match(plain.stderr, /unknown command 'no-such-command'/);
    const noToken = await cli(['fleet', 'list', '--json'], { RINGFENCE_SERVER: ts.url });
    assert.equal(noToken.code, 2);
    assert.deepEqual(jsonError(noToken).error, 'usage');
    assert.match(jsonError(noToken).message, /no admin token/);
    // No command at all shows the help, as a usage error.
    assert.equal((await cli([])).code, 2);
  });

  it('3: the server cannot be reached, or the token is rejected', async () => {
    const dropping = await droppingServer();
    const down = await cli(['fleet', 'list', '--json'], { ...auth, RINGFENCE_SERVER: dropping.url });
    dropping.close();
    assert.equal(down.code, 3, down.stderr);
    assert.equal(jsonError(down).error, 'unreachable');
    const bad = await cli(['fleet', 'list', '--json'], {
      ...auth,
      RINGFENCE_TOKEN: 'rfadm_not-a-real-token',
    });
    assert.equal(bad.code, 3, bad.stderr);
    assert.equal(jsonError(bad).error, 'unauthorized');
  });

  it('a closed pipe (`| head`) ends the command quietly: no EPIPE stack trace', async () => {
    for (const args of [['--help'], ['fleet', 'list']]) {
      const child = spawnGroup(process.execPath, [BIN, ...args], {
        env: { ...BASE_ENV, ...auth },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      // The reader goes away before the command has written anything (node takes far longer to start).
      child.stdout?.destroy();
      let stderr = '';
      child.stderr?.on('data', (d) => {
        stderr += d;
      });
      const code = await new Promise<number | null>((res) => child.once('close', (c) => res(c)));
      assert.doesNotMatch(stderr, /EPIPE|\n\s+at /, `${args.join(' ')}: ${stderr}`);
      assert.equal(code, 141, `${args.join(' ')}: 128 + SIGPIPE, like other Unix tools: ${stderr}`);
    }
  });
});
