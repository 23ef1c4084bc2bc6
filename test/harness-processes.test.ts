// The test harness's process control (test/helpers/processes.ts): a killed group takes its children along, and
// a test file that leaves a child running fails, with the child killed, instead of hanging the run.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { allSettled, guardProcesses, killProcess, liveDescendants, spawnGroup } from './helpers/processes.ts';
import { until } from './helpers/server.ts';

const PROCESSES = fileURLToPath(new URL('./helpers/processes.ts', import.meta.url));

/** Whether a process is alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return false;
  }
}

describe('test process control', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-processes-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('killProcess ends a process group: the shell and the child it started', async () => {
    const pidFile = join(dir, 'grandchild.pid');
    const p = spawnGroup('/bin/sh', ['-c', `sleep 300 & echo $! > ${pidFile}; wait`], { stdio: 'ignore' });
    const grandchild = await until(
      async () => {
        try {
          return Number(readFileSync(pidFile, 'utf8')) || null;
        } catch {
          return null;
        }
      },
      (pid) => pid !== null,
      60_000,
      'the grandchild pid',
    );
    assert.ok(grandchild && alive(grandchild));
    assert.ok(
      liveDescendants().some((d) => d.pid === grandchild),
      'a grandchild is a descendant',
    );
    await killProcess(p);
    await until(
      async () => alive(grandchild),
      (up) => !up,
      60_000,
      'the grandchild killed with its group',
    );
  });

  it('allSettled waits for every branch before it fails with the first error', async () => {
    let lateDone = false;
    const late = new Promise<void>((res) =>
      setTimeout(() => {
        lateDone = true;
        res();
      }, 200),
    );
    await assert.rejects(allSettled([Promise.reject(new Error('first')), late]), /first/);
    assert.ok(lateDone, 'the slower branch finished first');
  });

  it('a test file that leaves a child running fails, and the child is killed', async () => {
    const pidFile = join(dir, 'leaked.pid');
    const fixture = join(dir, 'leak.test.ts');
    writeFileSync(
      fixture,
      [
        "import { spawn } from 'node:child_process';",
        "import { writeFileSync } from 'node:fs';",
        "import { it } from 'node:test';",
        `import { guardProcesses } from ${JSON.stringify(PROCESSES)};`,
        "it('leaks a child', () => {",
        "  const p = spawn('sleep', ['300'], { stdio: 'ignore' });",
        `  writeFileSync(${JSON.stringify(pidFile)}, String(p.pid));`,
        '});',
        'guardProcesses();',
      ].join('\n'),
    );
    const r = await new Promise<{ code: number | null; out: string }>((res) =>
      execFile(
        process.execPath,
        ['--import', 'tsx', '--test', fixture],
        { timeout: 120_000, killSignal: 'SIGKILL', env: { ...process.env, NODE_TEST_CONTEXT: undefined } },
        (err, stdout, stderr) =>
          res({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` }),
      ),
    );
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /child processes outlived the tests and were killed: .*sleep 300/);
    const leaked = Number(readFileSync(pidFile, 'utf8'));
    await until(
      async () => alive(leaked),
      (up) => !up,
      60_000,
      'the leaked child killed',
    );
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
