// CLI contexts (like kubectl's) as a person uses them: `ringfence config …` writes the configuration file, and
// later commands reach a real server with no RINGFENCE_TOKEN in the environment. Precedence of flags, environment
// and contexts; a context's token never goes to another server; unknown contexts, broken YAML and token files
// others can read are usage errors (exit 2).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { BIN } from '../src/demo/fleet.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const run = promisify(execFile);

/** An address nothing listens on: a command sent there ends with exit 3 (unreachable). */
const NOWHERE = 'http://127.0.0.1:9';

describe('CLI contexts: config file, precedence, errors', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let dir: string;
  let cfg: string;
  let tokenFile: string;
  let wrongFile: string;

  before(async () => {
    ts = await startTestServer();
    dir = mkdtempSync(join(tmpdir(), 'rf-ctx-'));
    cfg = join(dir, 'home', '.config', 'ringfence', 'config.yaml');
    tokenFile = join(dir, 'lab.token');
    writeFileSync(tokenFile, `${ts.conn.token}\n`, { mode: 0o600 });
    wrongFile = join(dir, 'wrong.token');
    writeFileSync(wrongFile, 'rfop_not-a-real-token\n', { mode: 0o600 });
  });

  after(async () => {
    await ts?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The CLI as its own process, with no server, token or context from the test's environment. */
  async function cli(args: string[], env: Record<string, string> = {}) {
    const base: Record<string, string | undefined> = { ...process.env, RINGFENCE_CONFIG: cfg, CI: 'true' };
    for (const k of ['RINGFENCE_SERVER', 'RINGFENCE_TOKEN', 'RINGFENCE_CONTEXT']) delete base[k];
    try {
      const r = await run(process.execPath, [BIN, ...args], { env: { ...base, ...env } });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  }

  const mode = (p: string) => statSync(p).mode & 0o777;

  it('without a token anywhere, a command is a usage error that names the ways to give one', async () => {
    const r = await cli(['fleet', 'list', '--json']);
    assert.equal(r.code, 2, r.stderr);
    const err = JSON.parse(r.stdout);
    assert.equal(err.error, 'usage');
    assert.match(err.message, /--token.*RINGFENCE_TOKEN.*set-context/);
  });

  it('set-context writes a private file (0600 in a 0700 folder); the first context becomes current', async () => {
    const r = await cli(['config', 'set-context', 'lab', '--server', ts.url, '--token-file', tokenFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /context lab created .*\(current context\)/);
    assert.equal(mode(cfg), 0o600);
    assert.equal(mode(join(dir, 'home', '.config', 'ringfence')), 0o700);
    const text = readFileSync(cfg, 'utf8');
    assert.match(text, /current-context: lab/);
    assert.ok(!text.includes(ts.conn.token), 'the file holds the token file path, never the token');
    const other = await cli([
      'config',
      'set-context',
      'other',
      '--server',
      NOWHERE,
      '--token-file',
      tokenFile,
    ]);
    assert.equal(other.code, 0, other.stderr);
    assert.doesNotMatch(other.stdout, /current/, 'a second context does not take over');
    assert.deepEqual((await cli(['config', 'get-contexts', '--names'])).stdout.split('\n'), [
      'lab',
      'other',
      '',
    ]);
    assert.equal((await cli(['config', 'current-context'])).stdout, 'lab\n');
    const list = JSON.parse((await cli(['config', 'get-contexts', '--json'])).stdout);
    assert.deepEqual(list, [
      { name: 'lab', server: ts.url, token_file: tokenFile, current: true },
      { name: 'other', server: NOWHERE, token_file: tokenFile, current: false },
    ]);
  });

  it('commands reach the server through the current context, --context and RINGFENCE_CONTEXT', async () => {
    const viaCurrent = await cli(['fleet', 'list', '--json']);
    assert.equal(viaCurrent.code, 0, viaCurrent.stderr);
    assert.deepEqual(JSON.parse(viaCurrent.stdout), []);
    // "other" points where nothing listens: exit 3 proves it was the one used.
    assert.equal((await cli(['--context', 'other', 'fleet', 'list'])).code, 3);
    assert.equal((await cli(['fleet', 'list', '--context', 'other'])).code, 3, 'after the subcommand too');
    assert.equal((await cli(['fleet', 'list'], { RINGFENCE_CONTEXT: 'other' })).code, 3);
    const flagWins = await cli(['--context', 'lab', 'fleet', 'list'], { RINGFENCE_CONTEXT: 'other' });
    assert.equal(flagWins.code, 0, `--context beats RINGFENCE_CONTEXT: ${flagWins.stderr}`);
  });

  it('precedence: flags, then --context, then the environment, then the ambient context', async () => {
    // An environment token is never sent to a server the current context chose: a token exported for one
    // server must not follow a context switch (usage error, nothing sent).
    const envToken = await cli(['fleet', 'list'], { RINGFENCE_TOKEN: 'rfop_wrong' });
    assert.equal(envToken.code, 2, envToken.stderr);
    assert.match(envToken.stderr, /RINGFENCE_TOKEN is not sent to .* \(chosen by a context\)/);
    // With the server from the environment too, the environment token is used (and refused here: exit 3).
    const envPair = await cli(['fleet', 'list'], { RINGFENCE_TOKEN: 'rfop_wrong', RINGFENCE_SERVER: ts.url });
    assert.equal(envPair.code, 3, envPair.stderr);
    assert.match(envPair.stderr, /401/);
    // --token beats everything.
    assert.equal((await cli(['--token', 'rfop_wrong', '--context', 'lab', 'fleet', 'list'])).code, 3);
    // A context named on the command line beats the environment.
    const ctxFlag = await cli(['--context', 'lab', 'fleet', 'list'], {
      RINGFENCE_TOKEN: 'rfop_wrong',
      RINGFENCE_SERVER: NOWHERE,
    });
    assert.equal(ctxFlag.code, 0, ctxFlag.stderr);
    // Server and token from the environment: the current context is not used at all.
    assert.equal((await cli(['fleet', 'list'], { RINGFENCE_SERVER: NOWHERE, RINGFENCE_TOKEN: 'x' })).code, 3);
    const envBoth = await cli(['fleet', 'list', '--json'], {
      RINGFENCE_SERVER: ts.url,
      RINGFENCE_TOKEN: ts.conn.token,
      RINGFENCE_CONFIG: join(dir, 'no-such-config.yaml'),
    });
    assert.equal(envBoth.code, 0, envBoth.stderr);
  });

  it("a context's token is never sent to another server", async () => {
    for (const [args, env] of [
      [['--server', NOWHERE, 'fleet', 'list', '--json'], {}],
      [['fleet', 'list', '--json'], { RINGFENCE_SERVER: NOWHERE }],
    ] as Array<[string[], Record<string, string>]>) {
      const r = await cli(args, env);
      assert.equal(r.code, 2, `refused before any request (not 3, unreachable): ${r.stderr}`);
      const err = JSON.parse(r.stdout);
      assert.equal(err.error, 'usage');
      assert.match(err.message, /token of context "lab" is for .*not http:\/\/127\.0\.0\.1:9/);
      assert.ok(!`${r.stdout}${r.stderr}`.includes(ts.conn.token), 'no token in any output');
    }
    // With the same server spelt with a trailing slash, it is the same server.
    assert.equal((await cli(['--server', `${ts.url}/`, 'fleet', 'list'])).code, 0);
  });

  it('an unknown context is a usage error (exit 2), with a JSON error under --json', async () => {
    const r = await cli(['--context', 'nope', 'fleet', 'list', '--json']);
    assert.equal(r.code, 2);
    const err = JSON.parse(r.stdout);
    assert.equal(err.error, 'usage');
    assert.match(err.message, /unknown context "nope" \(from --context\); known: lab, other/);
    const env = await cli(['fleet', 'list'], { RINGFENCE_CONTEXT: 'nope' });
    assert.equal(env.code, 2);
    assert.match(env.stderr, /unknown context "nope" \(from RINGFENCE_CONTEXT\)/);
    // Even when the environment gives server and token: a misspelt name is reported, not silently unused.
    assert.equal(
      (
        await cli(['fleet', 'list'], {
          RINGFENCE_CONTEXT: 'nope',
          RINGFENCE_SERVER: ts.url,
          RINGFENCE_TOKEN: 'x',
        })
      ).code,
      2,
    );
    assert.equal((await cli(['config', 'use-context', 'nope'])).code, 2);
    assert.equal((await cli(['config', 'delete-context', 'nope'])).code, 2);
    assert.equal((await cli(['config', 'set-context', 'new'])).code, 2, 'a new context needs --server');
    assert.equal((await cli(['config', 'set-context', 'bad/name', '--server', ts.url])).code, 2);
    assert.equal((await cli(['config', 'set-context', 'x', '--server', 'ftp://h'])).code, 2);
  });

  it('a token file other users can read is refused (exit 2), at use and at set-context', async () => {
    const open = join(dir, 'open.token');
    writeFileSync(open, `${ts.conn.token}\n`);
    chmodSync(open, 0o644);
    const set = await cli(['config', 'set-context', 'loose', '--server', ts.url, '--token-file', open]);
    assert.equal(set.code, 2);
    assert.match(set.stderr, /readable by other users \(mode 0644\); run: chmod 600/);
    // A file loosened after it was set up is refused at use.
    const later = join(dir, 'later.token');
    writeFileSync(later, `${ts.conn.token}\n`, { mode: 0o600 });
    assert.equal(
      (await cli(['config', 'set-context', 'later', '--server', ts.url, '--token-file', later])).code,
      0,
    );
    chmodSync(later, 0o640);
    const r = await cli(['--context', 'later', 'fleet', 'list']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /context "later": token file .*later\.token is readable by other users/);
    assert.ok(!`${r.stdout}${r.stderr}`.includes(ts.conn.token));
    chmodSync(later, 0o600);
    assert.equal((await cli(['--context', 'later', 'fleet', 'list'])).code, 0);
    const missing = await cli([
      'config',
      'set-context',
      'gone',
      '--server',
      ts.url,
      '--token-file',
      join(dir, 'nope'),
    ]);
    assert.equal(missing.code, 2);
  });

  it("use-context, delete-context; the operator's comments in the file are kept", async () => {
    writeFileSync(cfg, `# my fleets\n${readFileSync(cfg, 'utf8')}`);
    assert.equal((await cli(['config', 'use-context', 'other'])).code, 0);
    assert.equal((await cli(['config', 'current-context'])).stdout, 'other\n');
    assert.equal((await cli(['config', 'set-context', 'other', '--token-file', wrongFile])).code, 0);
    const del = await cli(['config', 'delete-context', 'other']);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /no current context now/);
    assert.match(del.stderr, /wrong\.token is still there/);
    assert.ok(existsSync(wrongFile), 'the token file is left in place');
    const none = await cli(['config', 'current-context', '--json']);
    assert.deepEqual(JSON.parse(none.stdout), { current_context: null, file: cfg });
    assert.equal((await cli(['config', 'current-context'])).code, 1);
    const text = readFileSync(cfg, 'utf8');
    assert.match(text, /^# my fleets$/m);
    assert.doesNotMatch(text, /other/);
    assert.equal(mode(cfg), 0o600, 'a rewrite keeps the file private');
    assert.equal((await cli(['fleet', 'list'])).code, 2, 'no current context, no token');
    assert.equal((await cli(['config', 'set-context', 'lab', '--use'])).code, 0);
    assert.equal((await cli(['fleet', 'list'])).code, 0);
  });

  it('a broken configuration file is a usage error naming the file, the line and the field', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `current-context: lab\ncontexts:\n  lab:\n    server: 12\n`);
    const r = await cli(['fleet', 'list', '--json'], { RINGFENCE_CONFIG: bad });
    assert.equal(r.code, 2, r.stderr);
    assert.match(JSON.parse(r.stdout).message, new RegExp(`^${bad}:4: contexts\\.lab\\.server: `));
    writeFileSync(bad, `current-context: lab\ncontexts:\n  lab: [unclosed\n`);
    const syntax = await cli(['config', 'get-contexts'], { RINGFENCE_CONFIG: bad });
    assert.equal(syntax.code, 2);
    assert.match(syntax.stderr, new RegExp(`${bad}:\\d+: invalid YAML`));
    writeFileSync(bad, `contexts:\n  lab:\n    server: ${ts.url}\n    token: abc\n`);
    const extra = await cli(['config', 'get-contexts'], { RINGFENCE_CONFIG: bad });
    assert.equal(extra.code, 2);
    assert.match(
      extra.stderr,
      /bad\.yaml:3: contexts\.lab: .*"token"/,
      'no inline tokens: a misplaced key is refused',
    );
    // A broken file is never overwritten by a change.
    assert.equal((await cli(['config', 'use-context', 'lab'], { RINGFENCE_CONFIG: bad })).code, 2);
    assert.match(readFileSync(bad, 'utf8'), /token: abc/);
    // Commands that need no context do not read the file.
    assert.equal((await cli(['completion', 'bash'], { RINGFENCE_CONFIG: bad })).code, 0);
  });

  it('the file is found under $XDG_CONFIG_HOME, else ~/.config; token files are relative to its folder', async () => {
    const home = join(dir, 'h2');
    const xdg = join(dir, 'xdg');
    mkdirSync(home);
    const env = { RINGFENCE_CONFIG: '', HOME: home, XDG_CONFIG_HOME: xdg };
    const file = join(xdg, 'ringfence', 'config.yaml');
    assert.equal((await cli(['config', 'set-context', 'lab', '--server', ts.url], env)).code, 0);
    assert.ok(existsSync(file));
    writeFileSync(join(xdg, 'ringfence', 'lab.token'), `${ts.conn.token}\n`, { mode: 0o600 });
    writeFileSync(
      file,
      `current-context: lab\ncontexts:\n  lab:\n    server: ${ts.url}\n    token-file: lab.token\n`,
    );
    assert.equal((await cli(['fleet', 'list'], env)).code, 0);
    const noXdg = { ...env, XDG_CONFIG_HOME: '' };
    assert.equal((await cli(['config', 'set-context', 'h', '--server', ts.url], noXdg)).code, 0);
    assert.ok(existsSync(join(home, '.config', 'ringfence', 'config.yaml')));
    assert.equal(mode(join(xdg, 'ringfence')), 0o700, 'a folder it creates is private');
    // RINGFENCE_CONFIG may point into a shared folder: that one is not changed, the file is private all the same.
    const shared = join(dir, 'shared');
    mkdirSync(shared, { mode: 0o755 });
    chmodSync(shared, 0o755);
    const own = { RINGFENCE_CONFIG: join(shared, 'ringfence.yaml') };
    assert.equal((await cli(['config', 'set-context', 'lab', '--server', ts.url], own)).code, 0);
    assert.equal(mode(shared), 0o755);
    assert.equal(mode(join(shared, 'ringfence.yaml')), 0o600);
  });

  it('login --save-context checks the name before signing in and saves nothing when sign-in fails', async () => {
    const bad = await cli(['login', '--sso', '--save-context', '../x', '--server', ts.url]);
    assert.equal(bad.code, 2);
    const before = readFileSync(cfg, 'utf8');
    const r = await cli(['login', '--sso', '--save-context', 'sso', '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(JSON.parse(r.stdout).error, 'sso_disabled');
    assert.match(
      r.stderr,
      new RegExp(`not configured on ${ts.url.replace(/[.]/g, '\\.')}`),
      'the server of the current context',
    );
    assert.equal(readFileSync(cfg, 'utf8'), before);
    // A broken configuration is reported before the sign-in starts (no request: the server is unreachable).
    const broken = join(dir, 'broken.yaml');
    writeFileSync(broken, 'contexts: [\n');
    const early = await cli(['login', '--sso', '--save-context', 'sso', '--server', NOWHERE], {
      RINGFENCE_CONFIG: broken,
    });
    assert.equal(early.code, 2, early.stderr);
    assert.match(early.stderr, /broken\.yaml:\d+: invalid YAML/);
  });
  it('a configuration others may edit, or a token file that holds no Ringfence token, is refused', async () => {
    const before = statSync(cfg).mode & 0o777;
    try {
      chmodSync(cfg, 0o666);
      const r = await cli(['fleet', 'list']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /must belong to you and be writable by you alone/);
    } finally {
      chmodSync(cfg, before);
    }
    const secret = join(dir, 'not-a-token');
    writeFileSync(secret, 'aws_secret_access_key = abc\n', { mode: 0o600 });
    const other = join(dir, 'other.yaml');
    writeFileSync(
      other,
      `current-context: x\ncontexts:\n  x:\n    server: ${ts.url}\n    token-file: ${secret}\n`,
      {
        mode: 0o600,
      },
    );
    const r = await cli(['fleet', 'list'], { RINGFENCE_CONFIG: other });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /does not hold a Ringfence token/);
    assert.doesNotMatch(r.stderr, /aws_secret/);
  });
});
