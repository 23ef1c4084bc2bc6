// Local attack surface of the server and the CLI: device-chosen text reaching the operator's terminal raw,
// hostile YAML (billion laughs, deep nesting, huge documents), and who else on the machine can read the data
// folder (database, blobs, signing keys) whatever order the commands ran in.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { z } from 'zod';
import { printTable, terminalSafe } from '../src/cli/output.ts';
import { parseValidatedYaml, YAML_LIMITS, YamlError } from '../src/config/validated-yaml.ts';
import { BIN } from '../src/demo/fleet.ts';
import { PlanError, parsePlan } from '../src/engine/plan.ts';
import { encode } from '../src/server/db/json.ts';
import { billionLaughs } from './helpers/fuzz.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/** A plan head followed by the alias bomb. */
const billionLaughsPlan = (prefix = 'name: lol\nwaves:\n  - name: w\n    size: 1\n') => billionLaughs(prefix);

const run = promisify(execFile);

/** Runs the CLI as a real process; never throws (the exit code is in the result). */
async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    // killSignal on timeout: a hung command never outlives the test.
    const r = await run(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
      maxBuffer: 16 * 1024 * 1024,
      timeout: 60_000,
      killSignal: 'SIGKILL',
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** Bytes no terminal should ever receive from the CLI's human output (only "\n" ends its lines). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

// ---------------------------------------------------------------------------------------------------------
describe('device text in the CLI is escaped for the terminal', { timeout: 300_000 }, () => {
  // A device (or a compromised server) chooses these: set the window title, clear the screen, move the cursor
  // up and overwrite the previous line, a C1 CSI, a fake extra table row, a right-to-left override.
  const NAME = 'evil\u001b]0;pwned\u0007\u001b[2J\u001b[1A\rok-device';
  const LABEL = 'prod\u009b31m\nfake-row   1   ok';
  const AGENT = '1.0\u001b[8m';
  const COMPONENT = 'app\u001b[31m';
  let ts: TestServer;
  let env: Record<string, string>;

  before(async () => {
    ts = await startTestServer();
    env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    const tok = await fetch(new URL('/v1/admin/enroll-tokens', ts.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ uses: 1 }),
    }).then((r) => r.json() as Promise<{ token: string }>);
    // The device protocol may refuse control characters (it should); the CLI must be safe either way, since
    // rows written before that check, or by a compromised server, reach it just the same.
    let res = await fetch(new URL('/v1/enroll', ts.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: tok.token, name: NAME, labels: { site: LABEL }, agent_version: AGENT }),
    });
    if (res.status >= 400) {
      res = await fetch(new URL('/v1/enroll', ts.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: tok.token, name: 'plain', labels: { site: 'plain' } }),
      });
    }
    assert.equal(res.status, 200, await res.clone().text());
    const dev = (await res.json()) as { device_id: string; device_token: string };
    const checkin = await fetch(new URL('/v1/checkin', ts.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${dev.device_token}` },
      body: JSON.stringify({ components: [{ name: COMPONENT, version: '1\u001b[0m', state: 'idle' }] }),
    });
    await checkin.arrayBuffer();
    // Whatever the protocol let through, the stored row now holds the hostile text.
    await ts.srv.ctx.store.db
      .updateTable('devices')
      .set({ name: NAME, labels: encode({ site: LABEL }), agent_version: AGENT })
      .where('id', '=', dev.device_id)
      .execute();
    const comps = await ts.srv.ctx.store.db
      .selectFrom('device_components')
      .select('component')
      .where('device_id', '=', dev.device_id)
      .execute();
    if (!comps.length)
      await ts.srv.ctx.store.db
        .insertInto('device_components')
        .values({
          device_id: dev.device_id,
          component: COMPONENT,
          version: '1\u001b[0m',
          state: 'idle',
          health: encode({}),
          quarantined: encode([]),
          updated_at: Date.now(),
        })
        .execute();
  });
  after(async () => {
    await ts?.close();
  });

  it('terminalSafe makes C0, C1, DEL, ESC and bidi overrides visible and leaves other text alone', () => {
    assert.equal(terminalSafe('a\u001b[31mb'), 'a\\x1b[31mb');
    assert.equal(terminalSafe('\u009b\u0007\u0000\u007f\r\n\t'), '\\x9b\\x07\\x00\\x7f\\x0d\\x0a\\x09');
    assert.equal(terminalSafe('abc\u202edef'), 'abc\\u202edef');
    assert.equal(terminalSafe('ünïcødé 名前 ✓ -_.:/@'), 'ünïcødé 名前 ✓ -_.:/@');
    assert.equal(terminalSafe(42), '42');
  });

  it('printTable escapes every cell and keeps the columns aligned', (t) => {
    const out: string[] = [];
    const write = process.stdout.write;
    t.after(() => {
      process.stdout.write = write;
    });
    process.stdout.write = ((s: string) => {
      out.push(s);
      return true;
    }) as typeof process.stdout.write;
    printTable(
      [
        { name: NAME, n: 1 },
        { name: 'b', n: null },
      ],
      ['name', 'n'],
    );
    process.stdout.write = write;
    const text = out.join('');
    assert.doesNotMatch(text, RAW_CONTROL);
    const lines = text.trimEnd().split('\n');
    assert.equal(lines.length, 3, 'a newline in a cell must not make a row');
    // The last column holds one character on every line: equal lengths mean aligned columns.
    assert.deepEqual(
      lines.map((l) => l.length),
      [lines[0].length, lines[0].length, lines[0].length],
      'columns aligned on the escaped text',
    );
  });

  it('`fleet list` prints device names, labels and components escaped', async () => {
    const r = await cli(['fleet', 'list'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW_CONTROL, JSON.stringify(r.stdout));
    assert.equal(r.stdout.trimEnd().split('\n').length, 2, `header and one row: ${JSON.stringify(r.stdout)}`);
    assert.ok(r.stdout.includes('evil\\x1b]0;pwned\\x07\\x1b[2J'), r.stdout);
    assert.ok(r.stdout.includes('site=prod\\x9b31m\\x0afake-row'), r.stdout);
    assert.ok(r.stdout.includes('app\\x1b[31m@'), r.stdout);
  });

  it('`fleet list --json` stays exact JSON', async () => {
    const r = await cli(['fleet', 'list', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW_CONTROL, 'JSON escapes control characters itself');
    const rows = JSON.parse(r.stdout) as Array<{ name: string; labels: Record<string, string> }>;
    assert.equal(rows[0].name, NAME);
    assert.equal(rows[0].labels.site, LABEL);
  });

  it('`fleet show` prints device text escaped', async () => {
    const r = await cli(['fleet', 'show', NAME], env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, RAW_CONTROL, JSON.stringify(r.stdout));
  });

  it('a one-line error carrying server text is escaped', async () => {
    const r = await cli(['fleet', 'show', 'no\u001b[2Jsuch'], env);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr, RAW_CONTROL, JSON.stringify(r.stderr));
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('hostile YAML is refused by the one YAML parser', { timeout: 300_000 }, () => {
  const any = z.object({}).passthrough();
  const refused = (text: string, re: RegExp, file = 'evil.yaml') => {
    const t0 = performance.now();
    assert.throws(
      () => parseValidatedYaml(any, text, file),
      (e: Error) => {
        assert.ok(e instanceof YamlError, `${e.constructor.name}: ${e.message}`);
        assert.match(e.message, new RegExp(`^${file.replace('.', '\\.')}:\\d+: `));
        assert.match(e.message, re);
        return true;
      },
    );
    return performance.now() - t0;
  };

  it('a billion laughs: refused with file and line, quickly', () => {
    const ms = refused(billionLaughsPlan(''), /too many YAML aliases/);
    assert.ok(ms < 5000, `took ${ms} ms`);
    assert.throws(
      () => parsePlan(billionLaughsPlan(), 'plans/lol.yaml'),
      (e: Error) => {
        assert.ok(e instanceof PlanError);
        assert.match(e.message, /^plans\/lol\.yaml:(\d+): too many YAML aliases/);
        assert.ok(Number(/:(\d+):/.exec(e.message)?.[1]) > 4, 'names the line of the alias, not line 1');
        return true;
      },
    );
  });

  it('a linear alias bomb (one big anchor, thousands of aliases) is refused too', () => {
    const big = `a: &a [${Array(5000).fill('x').join(',')}]\nb: [${Array(5000).fill('*a').join(',')}]\n`;
    refused(big, /too many YAML aliases/);
  });

  it('an alias inside its own anchor is refused', () => {
    refused('a: &a [1, *a]\n', /alias|invalid YAML/);
  });

  it('deep nesting is refused before the parser recurses into it', () => {
    for (const text of [
      `a: ${'['.repeat(300_000)}${']'.repeat(300_000)}`,
      `a: ${'{a: '.repeat(200_000)}`,
      `${'- '.repeat(300_000)}x`,
      `a: [${'"]", ['.repeat(100_000)}`,
    ]) {
      const ms = refused(text, /nested deeper than \d+ levels/);
      assert.ok(ms < 5000, `took ${ms} ms`);
    }
    let block = 'x:\n';
    for (let i = 1; i < 100; i++) block += `${' '.repeat(i)}x:\n`;
    refused(block, /nested deeper/);
  });

  it('a document over the size cap is refused without parsing it', () => {
    const text = `a: 1\nb: "${'x'.repeat(YAML_LIMITS.maxBytes)}"\n`;
    refused(text, /too large \(\d+ bytes; at most \d+\)/);
  });

  it('ordinary anchors, aliases and nesting still work', () => {
    const plan = parsePlan(
      [
        'name: anchors',
        'window: &w',
        '  cron: "* * * * *"',
        '  duration: 1h',
        '  timezone: UTC',
        'waves:',
        '  - name: canary',
        '    size: 1',
        '    window: *w',
        '  - name: all',
        '    size: 100%',
        '    window: *w',
        '',
      ].join('\n'),
      'ok.yaml',
    );
    assert.equal(plan.waves.length, 2);
    const nested = parseValidatedYaml(any, `a: ${'['.repeat(40)}1${']'.repeat(40)}\n`, 'n.yaml');
    assert.ok(nested);
  });

  describe('through POST /v1/admin/plans', () => {
    let ts: TestServer;
    before(async () => {
      ts = await startTestServer();
    });
    after(async () => {
      await ts?.close();
    });
    const post = async (source: string) => {
      const res = await fetch(new URL('/v1/admin/plans', ts.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ source, file: 'lol.yaml' }),
      });
      return { status: res.status, body: (await res.json()) as { message?: string } };
    };

    it('refuses a billion laughs with a 4xx naming file and line', async () => {
      const r = await post(billionLaughsPlan());
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message ?? '', /^lol\.yaml:\d+: too many YAML aliases/);
    });

    it('refuses deep nesting with a 4xx', async () => {
      const r = await post(`name: x\nwaves: ${'['.repeat(90_000)}${']'.repeat(90_000)}\n`);
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message ?? '', /^lol\.yaml:\d+: /);
    });

    it('still answers afterwards', async () => {
      const res = await fetch(new URL('/healthz', ts.url));
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
const modeOf = (p: string) => statSync(p).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;

/** A `ringfence server` process under umask 000 (the worst case), answering on a free loopback port. */
interface ServerProc {
  proc: ChildProcess;
  url: string;
  /** Everything it wrote so far, stdout and stderr. */
  output: () => string;
  /** Resolves when its output matches (stdout and stderr arrive through separate pipes, in any order). */
  waitFor: (re: RegExp, ms?: number) => Promise<RegExpExecArray>;
}

function startServerProc(data: string): Promise<ServerProc> {
  // `exec` keeps one process: the pid is node's, so killing it stops the server.
  const proc = spawnGroup(
    '/bin/sh',
    ['-c', 'umask 000 && exec "$0" "$@"', process.execPath, BIN, 'server', '--data', data, '--port', '0'],
    { env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d;
    for (const w of [...waiters]) w();
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', onData);
  proc.once('exit', () => {
    for (const w of [...waiters]) w();
  });
  const waitFor = (re: RegExp, ms = 120_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${re} in the server's output within ${ms} ms: ${out}`));
      }, ms);
      const check = () => {
        const m = re.exec(out);
        if (m) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(m);
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          clearTimeout(timer);
          waiters.delete(check);
          reject(new Error(`server exited (${proc.exitCode ?? proc.signalCode}) before ${re}: ${out}`));
        }
      };
      waiters.add(check);
      check();
    });
  return waitFor(/"address":"(http:\/\/[^"]+)"[^\n]*listening/).then((m) => ({
    proc,
    url: m[1],
    output: () => out,
    waitFor,
  }));
}

/** The admin token a first start prints once. */
async function adminToken(s: ServerProc): Promise<string> {
  return (await s.waitFor(/admin token \(shown once[^:]*\): (\S+)/))[1];
}

/** Stops a server process and waits for it to be gone. */
async function stopServer(s: ServerProc | undefined): Promise<void> {
  await killProcess(s?.proc);
}

/** `ringfence keys init` under umask 000. */
async function keysInit(data: string) {
  try {
    const r = await run(
      '/bin/sh',
      ['-c', 'umask 000 && exec "$0" "$@"', process.execPath, BIN, 'keys', 'init', '--data', data, '--json'],
      { timeout: 60_000, killSignal: 'SIGKILL' },
    );
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

async function uploadBlob(s: ServerProc, token: string, text: string): Promise<string> {
  const res = await fetch(new URL('/v1/admin/blobs', s.url), {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: text,
  });
  const b = (await res.json()) as { sha256: string };
  assert.equal(res.status, 200, JSON.stringify(b));
  return b.sha256;
}

/** Every permission the data folder must have: nothing in it readable by anyone but its owner. */
function assertPrivate(data: string, opts: { running: boolean; blobs?: string[] }): void {
  const problems: string[] = [];
  const want = (p: string, mode: number) => {
    if (!existsSync(p)) return problems.push(`${p} missing`);
    if (modeOf(p) !== mode) problems.push(`${p} is ${octal(modeOf(p))}, want ${octal(mode)}`);
  };
  want(data, 0o700);
  want(join(data, 'ringfence.db'), 0o600);
  if (opts.running) {
    // WAL mode: both exist while the server has the database open.
    want(join(data, 'ringfence.db-wal'), 0o600);
    want(join(data, 'ringfence.db-shm'), 0o600);
  }
  want(join(data, 'blobs'), 0o700);
  for (const sha of opts.blobs ?? []) {
    want(join(data, 'blobs', sha.slice(0, 2)), 0o700);
    want(join(data, 'blobs', sha.slice(0, 2), sha), 0o600);
  }
  const keys = join(data, 'tuf', 'keys');
  if (existsSync(keys)) {
    want(keys, 0o700);
    for (const f of readdirSync(keys)) want(join(keys, f), 0o600);
  }
  assert.deepEqual(problems, []);
}

describe('the data folder is private whatever order the commands run in', { timeout: 300_000 }, () => {
  const root = mkdtempSync(join(tmpdir(), 'rf-perm-'));
  const servers: ServerProc[] = [];
  after(async () => {
    for (const s of servers) await stopServer(s);
    rmSync(root, { recursive: true, force: true });
  });
  const start = async (data: string) => {
    const s = await startServerProc(data);
    servers.push(s);
    return s;
  };

  it('server first, then keys init (while it runs)', async () => {
    const data = join(root, 'server-first');
    const s = await start(data);
    const sha = await uploadBlob(s, await adminToken(s), 'first blob\n');
    const k = await keysInit(data);
    assert.equal(k.code, 0, k.stderr);
    assertPrivate(data, { running: true, blobs: [sha] });
    await stopServer(s);
  });

  it('keys init first, then the server', async () => {
    const data = join(root, 'keys-first');
    const k = await keysInit(data);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(modeOf(data), 0o700, 'keys init makes the data folder private');
    const s = await start(data);
    const sha = await uploadBlob(s, await adminToken(s), 'second blob\n');
    assertPrivate(data, { running: true, blobs: [sha] });
    await stopServer(s);
  });

  it('a folder left with loose modes is tightened on start, and the log says so', async () => {
    const data = join(root, 'loose');
    // A first run makes the files, then everything is loosened (an older version, a careless restore).
    const s1 = await start(data);
    const sha = await uploadBlob(s1, await adminToken(s1), 'third blob\n');
    await stopServer(s1);
    assert.equal((await keysInit(data)).code, 0);
    // A stray blob copied in by hand, world-readable.
    const stray = Buffer.from('copied in\n');
    const straySha = createHash('sha256').update(stray).digest('hex');
    mkdirSync(join(data, 'blobs', straySha.slice(0, 2)), { recursive: true });
    writeFileSync(join(data, 'blobs', straySha.slice(0, 2), straySha), stray);
    for (const p of [
      data,
      join(data, 'blobs'),
      join(data, 'blobs', sha.slice(0, 2)),
      join(data, 'blobs', straySha.slice(0, 2)),
      join(data, 'tuf', 'keys'),
    ])
      chmodSync(p, 0o755);
    for (const p of [
      join(data, 'ringfence.db'),
      join(data, 'blobs', sha.slice(0, 2), sha),
      join(data, 'blobs', straySha.slice(0, 2), straySha),
      join(data, 'tuf', 'keys', 'timestamp.json'),
    ])
      chmodSync(p, 0o644);
    for (const f of ['ringfence.db-wal', 'ringfence.db-shm']) {
      const p = join(data, f);
      if (existsSync(p)) chmodSync(p, 0o666);
    }
    const s2 = await start(data);
    assertPrivate(data, { running: true, blobs: [sha, straySha] });
    const said = await s2.waitFor(/[^\n]*tightened permissions[^\n]*/);
    assert.ok(said[0].includes(data), `the log names the folder: ${said[0]}`);
    await stopServer(s2);
  });

  it('keys init on an existing loose folder tightens it and says so', async () => {
    const data = join(root, 'loose-keys');
    mkdirSync(data, { mode: 0o755 });
    chmodSync(data, 0o777);
    const k = await keysInit(data);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(modeOf(data), 0o700);
    assert.match(k.stderr, /tightened permissions/);
    assert.doesNotThrow(() => JSON.parse(k.stdout), '--json output stays clean');
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
