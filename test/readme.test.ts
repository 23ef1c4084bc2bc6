// README.md is a program: every ```sh runnable block is run by bash, in order, against a real server and five
// real agent processes in a temporary folder, and must exit 0. Variables a block exports reach the next one
// (as in one shell). Also `rollout watch` against a real server: one JSON object per change, exit 1 on a halt.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { api } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { guardProcesses, killProcess, signal, spawnGroup } from './helpers/processes.ts';
import { cycle, enrollDevices, release } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'bin/ringfence.js');

/** The runnable blocks of README.md, in order. */
function runnableBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh runnable\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a child to its end (or kills its process group at the timeout); background children keep running. */
function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawnGroup(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    let done = false;
    const finish = (code: number | null, signal: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    };
    const timer = setTimeout(() => {
      stderr += `\n[test] timed out after ${timeoutMs} ms`;
      signal(child, 'SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => finish(code, signal));
    // A background process that kept our pipes open must not hold the block: its exit is enough.
    child.on('exit', (code, signal) => setTimeout(() => finish(code, signal), 2000).unref());
  });
}

const tail = (s: string, n = 2500) => (s.length > n ? `…${s.slice(-n)}` : s);

/** Whether pid is still a Ringfence process of ours (pids are reused: never signal a stranger). */
function ours(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('ringfence');
  } catch {
    return false;
  }
}

async function stopAll(pids: Set<number>): Promise<void> {
  const live = () => [...pids].filter(ours);
  for (const pid of live()) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
  }
  const end = Date.now() + 8000;
  while (live().length && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  for (const pid of live()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
}

describe('README.md', () => {
  const home = mkdtempSync(join(tmpdir(), 'rf-readme-'));
  const pids = new Set<number>();
  const pidFile = join(home, 'lab', 'pids');
  const readPids = () => {
    if (existsSync(pidFile))
      for (const p of readFileSync(pidFile, 'utf8').split(/\s+/).filter(Boolean)) pids.add(Number(p));
  };
  after(async () => {
    readPids(); // also those of a block the test timed out in
    await stopAll(pids);
    rmSync(home, { recursive: true, force: true });
  });

  it('keeps the two headline commands', () => {
    const md = readFileSync(join(ROOT, 'README.md'), 'utf8');
    assert.match(md, /^npm install && node bin\/ringfence\.js demo$/m);
    assert.match(md, /^npm test$/m);
  });

  it('the tour runs as written: every runnable block exits 0, in order', { timeout: 480_000 }, async () => {
    const blocks = runnableBlocks(readFileSync(join(ROOT, 'README.md'), 'utf8'));
    assert.ok(blocks.length >= 6, `${blocks.length} runnable blocks`);
    const lab = join(home, 'lab');
    const state = join(home, 'shell-state.sh');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RF_HOME: lab,
      RF_PORT: String(await freePort()),
      RF_STATE: state,
      RINGFENCE_LOG_LEVEL: 'warn',
    };
    // The tour must make its own server address and token, not inherit ours.
    for (const k of ['RINGFENCE_SERVER', 'RINGFENCE_TOKEN', 'NODE_TEST_CONTEXT', 'NODE_OPTIONS'])
      delete env[k];
    const logs = () => {
      if (!existsSync(lab)) return '';
      const files = [
        'server.log',
        ...readdirSync(lab)
          .filter((d) => d.startsWith('lab-'))
          .map((d) => `${d}/agent.log`),
      ];
      return files
        .filter((f) => existsSync(join(lab, f)))
        .map((f) => `--- ${f}\n${tail(readFileSync(join(lab, f), 'utf8'), 1200)}`)
        .join('\n');
    };
    const outputs: string[] = [];
    for (const [i, block] of blocks.entries()) {
      // One shell in spirit: what a block exports is there for the next (export -p, sourced back).
      const script = `set -eo pipefail\nif [ -f "$RF_STATE" ]; then . "$RF_STATE"; fi\n${block}\nexport -p > "$RF_STATE"\n`;
      const r = await runChild('bash', ['-c', script], env, 120_000);
      readPids();
      outputs.push(r.stdout);
      assert.equal(
        r.code,
        0,
        `README block ${i} (${block.split('\n')[0]}) exited ${r.code ?? r.signal}\n--- stdout\n${tail(r.stdout)}\n--- stderr\n${tail(r.stderr)}\n${logs()}`,
      );
    }
    const all = outputs.join('\n');
    // A few signs that the blocks did what the README says, beyond exiting 0.
    assert.match(all, /plan lab: valid; fleet of 5 devices/);
    assert.match(all, /end state: rolled-back/, 'the crash rehearsal is contained and rolled back');
    assert.match(all, /rollout 1 completed/);
    assert.match(all, /rollout 2 did not complete \(exit 1\)/, 'the bad release does not complete');
    const broken = outputs.find((o) => o.includes('did not complete')) ?? '';
    assert.equal(broken.match(/sensor-content@1\.0\.0\b/g)?.length, 5, 'every device is back on 1.0.0');
    assert.match(all, /^wrote \S+\/branch\.rfb: 1 releases/m, 'the bundle was written');
    assert.match(all, /^report: \S+\/rehearsal\/index\.html$/m, 'the rehearsal report was written');
    assert.ok(!existsSync(lab), 'the last block stopped the lab and removed it');
  });
});

describe('rollout watch', () => {
  let ts: TestServer;
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) await killProcess(c);
    await ts?.close();
  });

  const cliEnv = () => ({ ...process.env, RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token });

  it('prints one JSON object per change and exits 1 with the reason when the rollout halts', async () => {
    ts = await startTestServer();
    const devs = await enrollDevices(ts.conn, [{ lab: 'w' }, { lab: 'w' }, { lab: 'w' }], 'wcomp');
    await release(ts.conn, 'wcomp', '1.0.0');
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: [
        'name: watched',
        'on_failure: halt',
        'first_wave_cap: 50%',
        'waves:',
        '  - { name: one, size: 1, max_failures: 0 }',
        '  - { name: rest, size: 100%, max_failures: 0 }',
      ].join('\n'),
    });
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'wcomp@1.0.0',
      plan: 'watched',
    });
    const child = spawnGroup(
      process.execPath,
      [CLI, 'rollout', 'watch', String(r.id), '--json', '--interval', '100ms'],
      {
        env: cliEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    await until(
      async () => stdout,
      (s) => s.includes('\n'),
      120_000,
      'the first line of rollout watch',
    );
    // The first wave's device succeeds (stop at its report: the next wave may start at once) …
    await until(
      async () => {
        for (const d of devs) if (await cycle(ts.conn, d, 'wcomp', 'succeeded')) return true;
        return false;
      },
      Boolean,
      120_000,
      'the first wave',
    );
    // … then the second wave's devices fail, which halts the rollout.
    await until(
      async () => {
        for (const d of devs) await cycle(ts.conn, d, 'wcomp', 'rolled-back');
        return (await api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`)).status;
      },
      (st) => st === 'halted',
      120_000,
      'the halt',
    );
    const code = await exited;
    assert.equal(code, 1, `watch exits 1 on a halt; stderr: ${stderr}`);
    assert.match(stderr, new RegExp(`^ringfence: rollout ${r.id} halted: .+`, 'm'));
    const lines = stdout.trim().split('\n');
    const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(objs[0].status, 'running');
    const last = objs.at(-1)!;
    assert.equal(last.status, 'halted');
    assert.equal(last.ended, true);
    assert.ok(typeof last.reason === 'string' && last.reason.length > 0);
    const waves = last.waves as Array<Record<string, number | string>>;
    assert.deepEqual(
      waves.map((w) => w.name),
      ['one', 'rest'],
    );
    assert.equal(waves[0].succeeded, 1);
    assert.ok((waves[1].failed as number) >= 1);
    for (const k of ['selected', 'offered', 'rolled_back', 'reverted', 'unconfirmed', 'skipped'])
      assert.equal(typeof waves[0][k], 'number', `per-wave count ${k}`);
    // Only changes are printed: no two consecutive objects say the same thing.
    const same = (a: Record<string, unknown>, b: Record<string, unknown>) =>
      JSON.stringify({ ...a, at: 0 }) === JSON.stringify({ ...b, at: 0 });
    for (let i = 1; i < objs.length; i++) assert.ok(!same(objs[i - 1], objs[i]), `line ${i} repeats`);
  });

  it('exits 1 at once for a rollout that does not exist', async () => {
    const r = await runChild(process.execPath, [CLI, 'rollout', 'watch', '999'], cliEnv(), 120_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ringfence: GET \/v1\/admin\/rollouts\/999: 404/m);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
