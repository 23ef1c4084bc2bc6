// The operator commands as a real CLI process against a real server on loopback (issue 12): tokens shown once,
// never listed; revoke, rotate, set-role, named expiring tokens; whoami; audit by actor; one-line 403 and 401.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { BIN } from '../src/demo/fleet.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const run = promisify(execFile);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

describe('ringfence operator, whoami and audit --actor (CLI process, real server)', {
  timeout: 300_000,
}, () => {
  let ts: TestServer;
  let adminToken: string;
  const tokens: Record<string, string> = {};

  /** Runs the CLI as its own process with `token`. */
  async function cli(token: string, args: string[]): Promise<Result> {
    try {
      const r = await run(process.execPath, [BIN, ...args], {
        env: { ...process.env, RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: token },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  }
  const ok = async (token: string, args: string[]) => {
    const r = await cli(token, args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const json = async <T>(token: string, args: string[]) =>
    JSON.parse((await ok(token, [...args, '--json'])).stdout) as T;
  /** A refusal: the exit code, and exactly one line on stderr matching `re`. */
  const refused = async (token: string, args: string[], code: number, re: RegExp) => {
    const r = await cli(token, args);
    assert.equal(r.code, code, `${args.join(' ')} exits ${code}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    return r;
  };
  const whoami = (token: string) =>
    json<{ name: string; role: string; token: string; actor: string; permissions: string[] }>(token, [
      'whoami',
    ]);

  before(async () => {
    ts = await startTestServer({ governance: { fourEyes: true } });
    adminToken = ts.conn.token;
  });
  after(async () => {
    await ts?.close();
  });

  it('whoami: the bootstrap token is the operator admin', async () => {
    const me = await whoami(adminToken);
    assert.equal(me.name, 'admin');
    assert.equal(me.role, 'admin');
    assert.equal(me.token, 'bootstrap');
    assert.equal(me.actor, 'admin');
    assert.deepEqual([...me.permissions].sort(), ['admin', 'approve', 'operate', 'read']);
    const human = await ok(adminToken, ['whoami']);
    assert.match(human.stdout, /^admin \(role admin\) with token bootstrap/);
  });

  it('operator add prints the token once; --json gives exactly name, role and token', async () => {
    const alice = await json<Record<string, string>>(adminToken, [
      'operator',
      'add',
      'alice',
      '--role',
      'operator',
    ]);
    assert.deepEqual(Object.keys(alice).sort(), ['name', 'role', 'token']);
    assert.equal(alice.name, 'alice');
    assert.equal(alice.role, 'operator');
    assert.match(alice.token, /^rfop_/);
    tokens.alice = alice.token;
    // Without --json: the token alone on stdout (for a secrets store), the advice on stderr.
    const bob = await ok(adminToken, ['operator', 'add', 'bob', '--role', 'approver']);
    assert.match(bob.stdout, /^rfop_\S+\n$/);
    assert.match(bob.stderr, /shown once/);
    tokens.bob = bob.stdout.trim();
    tokens.vera = (
      await json<{ token: string }>(adminToken, ['operator', 'add', 'vera', '--role', 'viewer'])
    ).token;
    assert.equal((await whoami(tokens.bob)).role, 'approver');
    assert.deepEqual((await whoami(tokens.vera)).permissions, ['read']);
    await refused(adminToken, ['operator', 'add', 'alice', '--role', 'viewer'], 1, /409/);
  });

  it('refuses a bad role or name as a usage error before any request', async () => {
    // Independent refusals, so run side by side: each CLI process takes seconds on a busy machine.
    await Promise.all([
      refused(adminToken, ['operator', 'add', 'zed', '--role', 'wizard'], 2, /invalid role "wizard"/),
      refused(adminToken, ['operator', 'add', 'Bad/Name', '--role', 'viewer'], 2, /invalid operator name/),
      refused(adminToken, ['operator', 'set-role', 'vera', 'root'], 2, /invalid role "root"/),
      refused(
        adminToken,
        ['operator', 'token', 'add', 'alice', '--token-name', 'ci', '--expires', 'soon'],
        2,
        /--expires: invalid duration/,
      ),
    ]);
  });

  it('operator list shows operators, roles and token names, never a token or a hash', async () => {
    const r = await json<{
      operators: Array<{ name: string; role: string; tokens: Array<{ name: string }> }>;
    }>(adminToken, ['operator', 'list']);
    const roles = Object.fromEntries(r.operators.map((o) => [o.name, o.role]));
    assert.deepEqual(roles, { admin: 'admin', alice: 'operator', bob: 'approver', vera: 'viewer' });
    assert.deepEqual(
      r.operators.find((o) => o.name === 'alice')?.tokens.map((t) => t.name),
      ['default'],
    );
    const human = await ok(adminToken, ['operator', 'list']);
    for (const out of [JSON.stringify(r), human.stdout]) {
      for (const t of [adminToken, ...Object.values(tokens)]) assert.ok(!out.includes(t), 'no token listed');
      assert.doesNotMatch(out, /rf(adm|op)_|hash|[0-9a-f]{64}/);
    }
    assert.match(human.stdout, /^NAME +ROLE/);
    assert.match(human.stdout, /\nalice +operator .* default\n/);
    // Listing operators is the admin's business.
    await refused(tokens.vera, ['operator', 'list'], 1, /403 role viewer may not .*needs admin/);
  });

  it('a viewer cannot approve (exit 1, the 403 on one line); four eyes and the waiting list show in release list', async () => {
    writeFileSync(join(ts.dir, 'app.conf'), 'threads=4\n');
    await ok(tokens.alice, [
      'release',
      'import',
      '--component',
      'app',
      '--version',
      '1.0',
      join(ts.dir, 'app.conf'),
    ]);
    const before = await json<Array<{ imported_by: string; approved: boolean; awaiting_approval: unknown }>>(
      adminToken,
      ['release', 'list'],
    );
    assert.equal(before[0].imported_by, 'alice');
    const waiting = before[0].awaiting_approval as { what: string; by_anyone_but: string | null };
    assert.equal(waiting.by_anyone_but, 'alice');
    assert.match(waiting.what, /app@1\.0|release/);
    const table = await ok(adminToken, ['release', 'list']);
    assert.match(table.stdout, /app@1\.0 .* no +alice +approval by anyone but alice/);

    await refused(
      tokens.vera,
      ['release', 'approve', 'app@1.0'],
      1,
      /^ringfence: .*403 role viewer may not /,
    );
    await refused(tokens.alice, ['release', 'approve', 'app@1.0'], 1, /403 role operator may not /);
    await ok(tokens.bob, ['release', 'approve', 'app@1.0']);
    const after = await json<Array<{ approved: boolean; awaiting_approval: unknown }>>(adminToken, [
      'release',
      'list',
    ]);
    assert.equal(after[0].approved, true);
    assert.ok(!after[0].awaiting_approval, 'nothing waits once approved');

    // The admin imports, the admin may not approve its own import.
    writeFileSync(join(ts.dir, 'app2.conf'), 'threads=8\n');
    await ok(adminToken, [
      'release',
      'import',
      '--component',
      'app',
      '--version',
      '2.0',
      join(ts.dir, 'app2.conf'),
    ]);
    await refused(
      adminToken,
      ['release', 'approve', 'app@2.0'],
      1,
      /409 four eyes: admin imported app@2\.0 and may not approve it/,
    );
  });

  it('named tokens with an expiry: actor NAME/TOKEN, audit list --actor, revoke one token only', async () => {
    const t = await json<{ operator: string; name: string; token: string; expires_at: number }>(adminToken, [
      'operator',
      'token',
      'add',
      'alice',
      '--token-name',
      'ci',
      '--expires',
      '30d',
    ]);
    assert.equal(t.operator, 'alice');
    assert.equal(t.name, 'ci');
    assert.ok(Math.abs(t.expires_at - (Date.now() + 30 * 86_400_000)) < 120_000, 'expires in 30 days');
    const me = await whoami(t.token);
    assert.equal(me.actor, 'alice/ci');
    await ok(t.token, ['fleet', 'enroll-token']);

    const mine = await json<Array<{ actor: string; action: string }>>(adminToken, [
      'audit',
      'list',
      '--actor',
      'alice',
    ]);
    assert.ok(mine.length >= 2);
    assert.ok(
      mine.every((e) => e.actor === 'alice' || e.actor.startsWith('alice/')),
      JSON.stringify(mine),
    );
    assert.deepEqual(
      [...new Set(mine.map((e) => e.actor))].sort(),
      ['alice', 'alice/ci'],
      'her default token and her CI token',
    );
    const bobs = await json<Array<{ actor: string; action: string }>>(adminToken, [
      'audit',
      'list',
      '--actor',
      'bob',
    ]);
    assert.ok(bobs.length > 0 && bobs.every((e) => e.actor === 'bob'));
    const table = await ok(adminToken, ['audit', 'list', '--actor', 'alice']);
    assert.doesNotMatch(table.stdout, / (admin|bob) /, 'nobody else in the table');

    const rev = await json<{ operator: string; name: string; revoked_at: number }>(adminToken, [
      'operator',
      'token',
      'revoke',
      'alice',
      'ci',
    ]);
    assert.equal(rev.name, 'ci');
    await refused(t.token, ['whoami'], 3, /401/);
    assert.equal((await whoami(tokens.alice)).actor, 'alice', 'her default token still works');
  });

  it('operator rotate: the old token is refused (exit 3, one line), the new one works', async () => {
    const r = await json<{ name: string; token: string }>(adminToken, ['operator', 'rotate', 'alice']);
    assert.equal(r.name, 'alice');
    assert.notEqual(r.token, tokens.alice);
    await refused(tokens.alice, ['release', 'list'], 3, /^ringfence: .*401/);
    assert.equal((await whoami(r.token)).name, 'alice');
    tokens.alice = r.token;
  });

  it('admin rotate-token rotates the caller’s own token, whatever its role', async () => {
    const r = await ok(tokens.bob, ['admin', 'rotate-token']);
    const fresh = r.stdout.trim();
    assert.match(fresh, /^rfop_/);
    await refused(tokens.bob, ['whoami'], 3, /401/);
    assert.equal((await whoami(fresh)).name, 'bob');
    tokens.bob = fresh;
  });

  it('operator set-role and operator revoke; the last admin is protected', async () => {
    const r = await json<{ name: string; role: string }>(adminToken, [
      'operator',
      'set-role',
      'vera',
      'approver',
    ]);
    assert.deepEqual(r, { name: 'vera', role: 'approver' });
    assert.equal((await whoami(tokens.vera)).role, 'approver', 'from her next request');
    const human = await ok(adminToken, ['operator', 'revoke', 'vera']);
    assert.match(human.stdout, /^operator vera revoked/);
    await refused(tokens.vera, ['release', 'list'], 3, /401 .*revoked/);
    const list = await json<{ operators: Array<{ name: string; revoked_at: number | null }> }>(adminToken, [
      'operator',
      'list',
    ]);
    assert.ok(list.operators.find((o) => o.name === 'vera')?.revoked_at);
    await refused(adminToken, ['operator', 'revoke', 'admin'], 1, /409 /);
    await refused(adminToken, ['operator', 'set-role', 'admin', 'viewer'], 1, /409 /);
  });

  it('stop-all and --allow-wide need --reason, which the audit log keeps', async () => {
    await refused(adminToken, ['rollout', 'stop-all'], 2, /stop-all needs --reason/);
    writeFileSync(join(ts.dir, 'p.yaml'), 'name: p\nwaves:\n  - name: all\n    size: 100%\n');
    await refused(
      adminToken,
      ['plan', 'apply', join(ts.dir, 'p.yaml'), '--allow-wide'],
      2,
      /--allow-wide needs --reason/,
    );
    await refused(
      tokens.alice,
      ['rollout', 'start', 'app@1.0', '--plan', 'p', '--emergency'],
      2,
      /--emergency needs --reason/,
    );
    await ok(tokens.alice, ['rollout', 'stop-all', '--reason', 'incident 42: bad sensor data']);
    const [last] = (
      await json<Array<{ actor: string; action: string; detail: unknown }>>(adminToken, [
        'audit',
        'list',
        '--actor',
        'alice',
      ])
    ).slice(-1);
    assert.equal(last.actor, 'alice');
    assert.match(JSON.stringify(last.detail), /incident 42: bad sensor data/);
  });

  it('rollout status says who started it', async () => {
    writeFileSync(join(ts.dir, 'one.yaml'), 'name: one\nwaves:\n  - name: canary\n    size: 1\n');
    await ok(tokens.alice, ['plan', 'apply', join(ts.dir, 'one.yaml')]);
    const started = await json<{ id: number }>(tokens.alice, [
      'rollout',
      'start',
      'app@1.0',
      '--plan',
      'one',
    ]);
    const st = await json<{ started_by: string }>(tokens.bob, ['rollout', 'status', String(started.id)]);
    assert.equal(st.started_by, 'alice');
    const human = await ok(tokens.bob, ['rollout', 'status', String(started.id)]);
    assert.match(human.stdout, /\nstarted by: alice\n/);
  });
});

guardProcesses();
