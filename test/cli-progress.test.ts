// Progress on long work (issue 13): `release import` of a large folder and `bundle export|import` show bytes,
// files, rate and ETA on stderr for a person at a terminal, and nothing for scripts (--json, not a TTY,
// RINGFENCE_PROGRESS=0). Real processes against a real server; RINGFENCE_PROGRESS=1 stands in for the terminal.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatBytes, progressLine, progressReporter, progressWanted } from '../src/terminal/progress.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const CLI = new URL('../bin/ringfence.js', import.meta.url).pathname;
const FILES = 200;
const FILE_BYTES = 100 * 1024;
const TOTAL = formatBytes(FILES * FILE_BYTES); // "19.5 MiB"

/** Runs the CLI to its end (killed after 5 minutes); stdin closed, no TTY anywhere. */
async function cli(args: string[], env: Record<string, string | undefined>) {
  const childEnv: Record<string, string> = { CI: 'true' };
  for (const [k, v] of Object.entries({ ...process.env, ...env }))
    if (v !== undefined && (k !== 'RINGFENCE_PROGRESS' || 'RINGFENCE_PROGRESS' in env)) childEnv[k] = v;
  const p = spawnGroup(process.execPath, [CLI, ...args], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  p.stdout?.on('data', (b) => {
    stdout += b;
  });
  p.stderr?.on('data', (b) => {
    stderr += b;
  });
  const timer = setTimeout(() => void killProcess(p), 300_000);
  try {
    const code = await new Promise<number | null>((res) => p.once('close', (c) => res(c)));
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
    await killProcess(p);
  }
}

/** The progress frames of one command in a stderr text: each redraw starts with \r. */
function frames(stderr: string, label: string): string[] {
  return stderr
    .split(/[\r\n]/)
    .map((l) => l.trimEnd())
    .filter((l) => l.startsWith(`${label}: `));
}

describe('progress reporter', () => {
  const sink = () => {
    const out = {
      text: '',
      isTTY: false,
      write(s: string) {
        out.text += s;
        return true;
      },
    };
    return out;
  };
  const step = (bytes: number, files: number) => ({
    phase: 'uploading',
    bytes,
    totalBytes: 1000,
    files,
    totalFiles: 10,
  });

  it('is on for a terminal only, off with --json or RINGFENCE_PROGRESS=0, forced with =1', () => {
    const saved = process.env.RINGFENCE_PROGRESS;
    try {
      delete process.env.RINGFENCE_PROGRESS;
      assert.equal(progressWanted(false, { isTTY: true }), true);
      assert.equal(progressWanted(false, { isTTY: false }), false);
      assert.equal(progressWanted(true, { isTTY: true }), false, '--json');
      process.env.RINGFENCE_PROGRESS = '0';
      assert.equal(progressWanted(false, { isTTY: true }), false);
      process.env.RINGFENCE_PROGRESS = '1';
      assert.equal(progressWanted(false, { isTTY: false }), true);
      assert.equal(progressWanted(true, { isTTY: false }), false, '--json wins over the variable');
    } finally {
      if (saved === undefined) delete process.env.RINGFENCE_PROGRESS;
      else process.env.RINGFENCE_PROGRESS = saved;
    }
  });

  it('redraws at most every 100 ms, in place, and ends with a final line', () => {
    const out = sink();
    out.isTTY = true;
    let t = 1_000;
    const saved = process.env.RINGFENCE_PROGRESS;
    delete process.env.RINGFENCE_PROGRESS;
    try {
      const p = progressReporter('release import', { stream: out, now: () => t });
      assert.equal(p.enabled, true);
      for (let i = 0; i <= 500; i++) p.update(step(i, 0)); // all within the same millisecond
      assert.equal(out.text.split('\r').length - 1, 1, 'one frame for a burst of updates');
      t += 50;
      p.update(step(600, 6));
      assert.equal(out.text.split('\r').length - 1, 1, 'not again within 100 ms');
      t += 60;
      p.update(step(700, 7));
      assert.equal(out.text.split('\r').length - 1, 2);
      assert.ok(!out.text.includes('\n'), 'redraws stay on one line');
      assert.match(
        out.text,
        /\rrelease import: uploading 700 B \/ 1000 B \(70%\), 7\/10 files, .*\/s, ETA \d+s *$/,
      );
      t += 1;
      p.update(step(1000, 10));
      p.done();
      assert.match(
        out.text,
        /\rrelease import: done, 1000 B, 10\/10 files in 0s, .*\/s *\n$/,
        'the last state',
      );
    } finally {
      if (saved !== undefined) process.env.RINGFENCE_PROGRESS = saved;
    }
  });

  it('pads over a longer previous line and clears the line on failure', () => {
    const out = sink();
    let t = 0;
    const saved = process.env.RINGFENCE_PROGRESS;
    process.env.RINGFENCE_PROGRESS = '1';
    try {
      const p = progressReporter('bundle import', { stream: out, now: () => t });
      p.update({ phase: 'verifying', bytes: 5_000_000, totalBytes: 9_000_000, files: 50, totalFiles: 90 });
      const first = out.text.length - 1;
      t += 200;
      p.update({ phase: 'storing', bytes: 0, totalBytes: 9, files: 0, totalFiles: 9 });
      const last = out.text.slice(out.text.lastIndexOf('\r') + 1);
      assert.ok(last.length >= first, 'the shorter line covers the longer one');
      p.clear();
      assert.match(out.text, /\r *\r$/);
      p.done(); // after a failure nothing more is drawn that would matter; it must not throw
    } finally {
      if (saved === undefined) delete process.env.RINGFENCE_PROGRESS;
      else process.env.RINGFENCE_PROGRESS = saved;
    }
  });

  it('draws nothing when disabled', () => {
    const out = sink();
    const p = progressReporter('release import', { stream: out, json: true });
    p.update(step(1, 1));
    p.done();
    p.clear();
    assert.equal(p.enabled, false);
    assert.equal(out.text, '');
  });

  it('says bytes, rate and time in units a person reads', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(20 * 1024 * 1024), '20.0 MiB');
    assert.equal(
      progressLine(
        'x',
        { phase: 'writing', bytes: 1024 * 1024, totalBytes: 4 * 1024 * 1024, files: 1, totalFiles: 4 },
        1000,
      ),
      'x: writing 1.0 MiB / 4.0 MiB (25%), 1/4 files, 1.0 MiB/s, ETA 3s',
    );
  });
});

describe('progress of long CLI work', () => {
  let ts: TestServer;
  let env: Record<string, string>;
  let data: string;
  let folder: string;
  let small: string; // where only quietness is checked: the same code path, a fraction of the time

  before(async () => {
    ts = await startTestServer();
    env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    data = ts.srv.ctx.dataDir;
    folder = join(ts.dir, 'big');
    for (let i = 0; i < FILES; i++) {
      const sub = join(folder, `d${i % 10}`);
      mkdirSync(sub, { recursive: true });
      writeFileSync(join(sub, `f${i}.bin`), randomBytes(FILE_BYTES));
    }
    small = join(ts.dir, 'small');
    mkdirSync(small);
    for (let i = 0; i < 20; i++) writeFileSync(join(small, `f${i}.bin`), randomBytes(FILE_BYTES));
    const keys = await cli(['keys', 'init', '--data', data, '--json'], {});
    assert.equal(keys.code, 0, keys.stderr);
  });
  after(async () => {
    await ts?.close();
  });

  const importArgs = (v: string, ...extra: string[]) => [
    'release',
    'import',
    '--component',
    'big',
    '--version',
    v,
    v === '1' ? folder : small,
    ...extra,
  ];

  it('release import shows progress with RINGFENCE_PROGRESS=1', async () => {
    const r = await cli(importArgs('1'), { ...env, RINGFENCE_PROGRESS: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported big@1 \(200 files\)\n$/, 'stdout keeps only the result');
    const f = frames(r.stderr, 'release import');
    assert.ok(f.length >= 2, `a frame and a final line: ${JSON.stringify(r.stderr.slice(0, 500))}`);
    assert.match(f[0], new RegExp(`^release import: uploading .* / ${TOTAL} \\(\\d+%\\), \\d+/200 files`));
    assert.ok(r.stderr.startsWith('\r'), 'redrawn in place');
    assert.match(f.at(-1)!, new RegExp(`^release import: done, ${TOTAL}, 200/200 files in \\d+s, .*/s$`));
    assert.ok(r.stderr.endsWith('\n'), 'the final line ends the output');
  });

  it('release import is quiet with --json, without a terminal, or with RINGFENCE_PROGRESS=0', async () => {
    const json = await cli(importArgs('2', '--json'), { ...env, RINGFENCE_PROGRESS: '1' });
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).artifacts.length, 20);
    assert.equal(json.stderr, '', '--json: nothing on stderr');
    const piped = await cli(importArgs('3'), env);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stderr, '', 'not a TTY: nothing on stderr');
    const off = await cli(importArgs('4'), { ...env, RINGFENCE_PROGRESS: '0' });
    assert.equal(off.code, 0, off.stderr);
    assert.equal(off.stderr, '');
  });

  it('a refused import clears its progress line before the one-line error', async () => {
    const r = await cli(importArgs('5'), {
      ...env,
      RINGFENCE_PROGRESS: '1',
      RINGFENCE_TOKEN: 'not-a-token',
    });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /(^|\r)ringfence: POST \/v1\/admin\/blobs: 401 /m);
    assert.ok(!/release import: done/.test(r.stderr), 'no final line for work that failed');
  });

  it('bundle export and import show progress with RINGFENCE_PROGRESS=1 and none with --json', async () => {
    const approve = await cli(['release', 'approve', 'big@1'], env);
    assert.equal(approve.code, 0, approve.stderr);
    const file = join(ts.dir, 'big.rfb');
    const exp = await cli(['bundle', 'export', file, 'big@1', '--data', data], { RINGFENCE_PROGRESS: '1' });
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stdout, /^wrote .*big\.rfb: 1 releases/);
    const ef = frames(exp.stderr, 'bundle export');
    assert.ok(
      ef.some((l) => /^bundle export: writing .* \/ .*, \d+\/\d+ files/.test(l)),
      exp.stderr.slice(0, 500),
    );
    assert.match(ef.at(-1)!, /^bundle export: done, .*, (\d+)\/\1 files in \d+s/);

    const quiet = await cli(
      ['bundle', 'export', join(ts.dir, 'big2.rfb'), 'big@1', '--data', data, '--json'],
      {
        RINGFENCE_PROGRESS: '1',
      },
    );
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
    assert.deepEqual(JSON.parse(quiet.stdout).releases, ['big@1']);

    const branch = join(ts.dir, 'branch');
    const root = join(data, 'tuf', 'metadata', '1.root.json');
    const imp = await cli(['bundle', 'import', file, '--data', branch, '--root', root], {
      RINGFENCE_PROGRESS: '1',
    });
    assert.equal(imp.code, 0, imp.stderr);
    const inf = frames(imp.stderr, 'bundle import');
    assert.ok(
      inf.some((l) => l.startsWith('bundle import: verifying ')),
      imp.stderr.slice(0, 500),
    );
    assert.ok(
      inf.some((l) => l.startsWith('bundle import: storing ')),
      imp.stderr.slice(0, 500),
    );
    assert.match(inf.at(-1)!, new RegExp(`^bundle import: done, ${TOTAL}, 200/200 files in \\d+s`));

    const again = await cli(['bundle', 'import', file, '--data', branch, '--json'], {});
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, '', 'not a TTY: nothing on stderr');
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
