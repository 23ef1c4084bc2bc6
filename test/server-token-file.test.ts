// The first admin token kept out of the journal: `ringfence server` as a real process whose stderr is a file that
// JOURNAL_STREAM names (as systemd sets it), or with --admin-token-file. The token is never on stdout or stderr,
// lands in a new 0600 file, works against the server, and is never lost or written over.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import {
  closeSync,
  fstatSync,
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
import { after, describe, it } from 'node:test';
import { BIN } from '../src/demo/fleet.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';

interface Run {
  proc: ChildProcess;
  /** The server's address once it listens; null when it exited first. */
  url: string | null;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const TOKEN = /rfadm_[A-Za-z0-9_-]{20,}/;

/**
 * Starts `ringfence server --data DATA --port 0 ARGS` with stderr in a file. `journal: true` sets JOURNAL_STREAM to
 * that file's device:inode, exactly what systemd does for a service logging to the journal.
 */
async function startServer(
  dir: string,
  data: string,
  args: string[] = [],
  opts: { journal?: boolean; env?: Record<string, string> } = {},
): Promise<Run> {
  const errFile = join(dir, `stderr-${Date.now()}-${Math.random().toString(36).slice(2)}.log`);
  const errFd = openSync(errFile, 'w');
  const st = fstatSync(errFd);
  const env: Record<string, string | undefined> = {
    ...process.env,
    RINGFENCE_LOG_LEVEL: 'info',
    ...opts.env,
  };
  delete env.RINGFENCE_INITIAL_ADMIN_TOKEN;
  if (opts.journal) env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
  else if (!opts.env?.JOURNAL_STREAM) delete env.JOURNAL_STREAM;
  const proc = spawnGroup(process.execPath, [BIN, 'server', '--data', data, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', errFd],
    env,
  });
  closeSync(errFd);
  let out = '';
  const exited = new Promise<number | null>((res) => proc.once('exit', (c) => res(c)));
  const url = await new Promise<string | null>((res) => {
    proc.stdout?.on('data', (d) => {
      out += d;
      const m = /"address":"(http:\/\/[^"]+)".*listening/.exec(out);
      if (m) res(m[1]);
    });
    void exited.then(() => res(null));
  });
  return { proc, url, stdout: () => out, stderr: () => readFileSync(errFile, 'utf8'), exited };
}

async function whoami(
  url: string,
  token: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL('/v1/admin/whoami', url), {
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The token in a file written by the server: one line, mode 0600. */
function tokenIn(file: string): string {
  assert.equal(statSync(file).mode & 0o777, 0o600, `${file} is 0600`);
  const text = readFileSync(file, 'utf8');
  assert.match(text, /^rfadm_[A-Za-z0-9_-]+\n$/);
  return text.trim();
}

describe('the first admin token is kept out of the journal', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-token-file-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('under journald: written to DATA/initial-admin-token (0600), never printed, kept on restart', async () => {
    const data = join(dir, 'journal');
    const first = await startServer(dir, data, [], { journal: true });
    try {
      assert.ok(first.url, `server started: ${first.stderr()}`);
      const file = join(data, 'initial-admin-token');
      const token = tokenIn(file);
      assert.doesNotMatch(first.stdout(), TOKEN, 'no token on stdout');
      assert.doesNotMatch(first.stderr(), TOKEN, 'no token on stderr');
      assert.ok(!first.stdout().includes(token) && !first.stderr().includes(token));
      assert.match(first.stderr(), new RegExp(`admin token written to ${file}`));
      const me = await whoami(first.url, token);
      assert.equal(me.status, 200);
      assert.equal(me.body.name, 'admin');
      assert.equal(me.body.role, 'admin');
      assert.equal((await whoami(first.url, `${token}x`)).status, 401, 'a wrong token is refused');
      assert.deepEqual(
        readdirSync(data).filter((f) => f.includes('admin-token')),
        ['initial-admin-token'],
        'no pending file left',
      );
    } finally {
      await killProcess(first.proc);
    }
    // A restart: the admin exists, the file is left exactly as it was, nothing is printed, no pending file left.
    const file = join(data, 'initial-admin-token');
    const before = statSync(file);
    const again = await startServer(dir, data, [], { journal: true });
    try {
      assert.ok(again.url, again.stderr());
      assert.equal(statSync(file).ino, before.ino);
      assert.equal(statSync(file).mtimeMs, before.mtimeMs);
      assert.doesNotMatch(again.stderr(), /admin token/);
      assert.equal((await whoami(again.url, tokenIn(file))).status, 200);
      assert.deepEqual(
        readdirSync(data).filter((f) => f.includes('admin-token')),
        ['initial-admin-token'],
      );
    } finally {
      await killProcess(again.proc);
    }
  });

  it('--admin-token-file writes a new 0600 file; an inherited JOURNAL_STREAM alone prints as before', async () => {
    const data = join(dir, 'flag');
    const file = join(dir, 'flag-token');
    // JOURNAL_STREAM names another stream (inherited from a parent that logged to the journal): not the journal.
    const run = await startServer(dir, data, ['--admin-token-file', file], {
      env: { JOURNAL_STREAM: '1:1' },
    });
    try {
      assert.ok(run.url, run.stderr());
      const token = tokenIn(file);
      assert.doesNotMatch(run.stderr() + run.stdout(), TOKEN);
      assert.equal((await whoami(run.url, token)).status, 200);
    } finally {
      await killProcess(run.proc);
    }
    const plain = await startServer(dir, join(dir, 'plain'), [], { env: { JOURNAL_STREAM: '1:1' } });
    try {
      assert.ok(plain.url, plain.stderr());
      const shown = /admin token \(shown once[^:]*\): (\S+)/.exec(plain.stderr())?.[1];
      assert.ok(shown, `token on stderr when stderr is not the journal: ${plain.stderr()}`);
      assert.equal((await whoami(plain.url, shown)).status, 200);
      assert.deepEqual(
        readdirSync(join(dir, 'plain')).filter((f) => f.includes('admin-token')),
        [],
      );
    } finally {
      await killProcess(plain.proc);
    }
  });

  it('never writes over an existing file, and the token is not lost', async () => {
    const data = join(dir, 'exists');
    const file = join(dir, 'exists-token');
    writeFileSync(file, 'an operator note\n');
    const run = await startServer(dir, data, ['--admin-token-file', file]);
    assert.equal(run.url, null, 'the server does not start');
    assert.equal(await run.exited, 1);
    const pending = `${file}.${run.proc.pid}.pending`;
    assert.match(run.stderr(), /already exists and was not replaced; the new admin token is in /);
    assert.ok(run.stderr().includes(pending), run.stderr());
    assert.equal(run.stderr().trim().split('\n').length, 1, `one line: ${run.stderr()}`);
    assert.doesNotMatch(run.stderr() + run.stdout(), TOKEN);
    assert.equal(readFileSync(file, 'utf8'), 'an operator note\n', 'the existing file is untouched');
    // The token kept aside is the admin's: the next start (no file wanted) prints nothing and accepts it.
    const token = tokenIn(pending);
    const again = await startServer(dir, data);
    try {
      assert.ok(again.url, again.stderr());
      assert.doesNotMatch(again.stderr(), /admin token/);
      assert.equal((await whoami(again.url, token)).status, 200);
    } finally {
      await killProcess(again.proc);
    }
  });

  it('an unwritable destination fails before any token is made', async () => {
    const data = join(dir, 'nofolder');
    const file = join(dir, 'missing-folder', 'token');
    const run = await startServer(dir, data, ['--admin-token-file', file], { journal: true });
    assert.equal(run.url, null);
    assert.equal(await run.exited, 1);
    assert.match(run.stderr(), new RegExp(`cannot write the admin token file ${file}: ENOENT`));
    // Nothing was stored: a plain start now makes (and shows) the first admin token.
    const again = await startServer(dir, data);
    try {
      assert.ok(again.url, again.stderr());
      assert.match(again.stderr(), /admin token \(shown once[^:]*\): rfadm_/);
    } finally {
      await killProcess(again.proc);
    }
  });
});

guardProcesses();
