// A lighter agent (issue 11): conditional TUF refresh and downloads streamed through the hash.
// A real server on loopback behind a counting proxy (every request the device makes is seen, and the proxy can
// play a server that answers 304 to everything): the verifier in-process, then a real agent process.
// Downloads against a blob server in a child process, so only the device side's memory is measured here.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { download } from '../src/agent/download.ts';
import { StepError } from '../src/agent/step-error.ts';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { type SpawnedDevice, stopAgents, writeContent } from '../src/demo/fleet.ts';
import { request } from '../src/net/http.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { ETAG_FILE } from '../src/trust/verifier/conditional.ts';
import { type OfferedArtifact, verifyRelease } from '../src/trust/verifier/device-verifier.ts';
import {
  enrollToken,
  GOOD,
  OLD,
  onVersion,
  pin,
  publishReleases,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { guardProcesses, killProcess, spawnGroup } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

guardProcesses();

interface Seen {
  method: string;
  path: string;
  status: number;
}

/** A loopback proxy in front of the server that records every request; `force304` fakes "unchanged". */
async function countingProxy(target: string) {
  const seen: Seen[] = [];
  const state = { force304: false };
  const server: Server = createHttpServer((req, res) => {
    const path = req.url ?? '/';
    if (state.force304 && path.endsWith('/timestamp.json')) {
      seen.push({ method: req.method ?? 'GET', path, status: 304 });
      res.writeHead(304).end();
      return;
    }
    const up = httpRequest(new URL(path, target), { method: req.method, headers: req.headers }, (r) => {
      seen.push({ method: req.method ?? 'GET', path, status: r.statusCode ?? 0 });
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    state,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('conditional TUF refresh', { timeout: 300_000 }, () => {
  let ts: TestServer;
  let repo: TufRepository;
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let metadataDir: string;
  const devices: SpawnedDevice[] = [];
  const NEXT = '1.3.0';
  const LATER = '1.4.0';

  before(async () => {
    ts = await startTestServer();
    repo = TufRepository.init(join(ts.dir, 'server')).repo;
    await publishReleases(ts, [OLD, GOOD]);
    proxy = await countingProxy(ts.url);
    metadataDir = join(ts.dir, 'device-tuf');
  });

  after(async () => {
    await stopAgents(devices);
    await proxy?.close();
    await ts?.close();
  });

  /** What the server would offer for a version: every signed artifact of it. */
  const offer = (version: string): OfferedArtifact[] =>
    Object.entries(repo.targets().signed.targets)
      .filter(([p]) => p.startsWith(`sensor-content/${version}/`))
      .map(([p, t]) => ({ name: p.split('/').pop()!, sha256: t.hashes.sha256, length: t.length }));
  const verify = (version: string, opts: { artifacts?: OfferedArtifact[]; now?: number } = {}) =>
    verifyRelease({
      metadataDir,
      pinnedRoot: repo.file('root.json')!,
      source: `${proxy.url}/v1/tuf`,
      component: 'sensor-content',
      version,
      artifacts: opts.artifacts ?? offer(version),
      now: opts.now,
    });
  const tufSince = (n: number) => proxy.seen.slice(n).filter((s) => s.path.startsWith('/v1/tuf/'));
  const ONE_304 = [{ method: 'GET', path: '/v1/tuf/timestamp.json', status: 304 }];

  it('the server answers If-None-Match with 304 for the current ETag and 200 otherwise', async () => {
    const first = await request(`${ts.url}/v1/tuf/timestamp.json`);
    const etag = String(first.body.headers.etag);
    first.body.resume();
    assert.match(etag, /^"[\w-]{32}"$/);
    for (const [h, want] of [
      [etag, 304],
      [`"other", ${etag}`, 304],
      ['*', 304],
      ['"other"', 200],
    ] as const) {
      const r = await request(`${ts.url}/v1/tuf/timestamp.json`, { headers: { 'if-none-match': h } });
      r.body.resume();
      assert.equal(r.status, want, `If-None-Match: ${h}`);
      assert.equal(r.body.headers.etag, etag);
    }
  });

  it('unchanged timestamp: one conditional request, no metadata download and no tuf-js refresh', async () => {
    let n = proxy.seen.length;
    const full = await verify(OLD);
    assert.ok(full.ok, JSON.stringify(full));
    const paths = tufSince(n).map((s) => `${s.path} ${s.status}`);
    assert.ok(paths.includes('/v1/tuf/timestamp.json 200'), paths.join(', '));
    assert.ok(paths.includes('/v1/tuf/2.root.json 404'), 'the full refresh looks for a newer root');
    assert.ok(existsSync(join(metadataDir, ETAG_FILE)), 'the ETag is kept beside the verified metadata');

    n = proxy.seen.length;
    const quick = await verify(GOOD);
    assert.ok(quick.ok, JSON.stringify(quick));
    assert.deepEqual(tufSince(n), ONE_304, 'only the conditional timestamp request, answered 304');
    assert.deepEqual(quick.versions, full.versions);
    assert.deepEqual(
      quick.artifacts.map((a) => a.path),
      offer(GOOD).map((a) => `sensor-content/${GOOD}/${a.name}`),
    );

    // The cached targets still decide: not listed → unapproved; other bytes → mismatch; other mode → mismatch.
    n = proxy.seen.length;
    const unapproved = await verify('9.9.9', { artifacts: offer(GOOD) });
    assert.equal(!unapproved.ok && unapproved.class, 'unapproved');
    const other = offer(GOOD).map((a) => ({ ...a, sha256: 'f'.repeat(64) }));
    const mismatch = await verify(GOOD, { artifacts: other });
    assert.equal(!mismatch.ok && mismatch.class, 'mismatch');
    const mode = await verify(GOOD, { artifacts: offer(GOOD).map((a) => ({ ...a, mode: 0o755 })) });
    assert.equal(!mode.ok && mode.class, 'mismatch');
    assert.deepEqual(tufSince(n), [...ONE_304, ...ONE_304, ...ONE_304]);
  });

  it('a changed timestamp is picked up: a release approved since then passes after a full refresh', async () => {
    const before = await verify(GOOD);
    assert.ok(before.ok);
    await importRelease(ts.conn, 'sensor-content', NEXT, [
      writeContent(join(ts.dir, 'content', NEXT), NEXT, 6),
    ]);
    await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${NEXT}/approve`, {});
    let n = proxy.seen.length;
    const r = await verify(NEXT);
    assert.ok(r.ok, JSON.stringify(r));
    const paths = tufSince(n).map((s) => `${s.path} ${s.status}`);
    assert.ok(paths.includes('/v1/tuf/timestamp.json 200'), paths.join(', '));
    assert.ok(
      paths.some((p) => /targets\.json 200$/.test(p)),
      'the new targets were downloaded',
    );
    assert.ok(
      r.versions.targets > before.versions.targets && r.versions.timestamp > before.versions.timestamp,
    );
    n = proxy.seen.length;
    assert.ok((await verify(NEXT)).ok);
    assert.deepEqual(tufSince(n), ONE_304, 'and then unchanged again');
  });

  it("a 304 never extends trust: the cached timestamp's expiry is enforced, even when the server forces 304", async () => {
    const ts0 = JSON.parse(readFileSync(join(metadataDir, 'timestamp.json'), 'utf8'));
    const later = Date.parse(ts0.signed.expires) + 1000;
    let n = proxy.seen.length;
    const honest = await verify(GOOD, { now: later });
    assert.equal(!honest.ok && honest.class, 'expired', JSON.stringify(honest));
    assert.deepEqual(tufSince(n), ONE_304);
    proxy.state.force304 = true;
    try {
      n = proxy.seen.length;
      const frozen = await verify(GOOD, { now: later });
      assert.equal(!frozen.ok && frozen.class, 'expired');
      assert.match(!frozen.ok ? frozen.reason : '', /timestamp\.json expired/);
      assert.deepEqual(tufSince(n), ONE_304);
      // The server changes (a new approval) but claims it did not: before the expiry the device holds exactly
      // what it verified, nothing newer (a freeze bounded by the timestamp's expiry, as with a replayed one).
      await importRelease(ts.conn, 'sensor-content', LATER, [
        writeContent(join(ts.dir, 'content', LATER), LATER, 5),
      ]);
      await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${LATER}/approve`, {});
      const hidden = await verify(LATER);
      assert.equal(!hidden.ok && hidden.class, 'unapproved');
    } finally {
      proxy.state.force304 = false;
    }
    assert.ok((await verify(LATER)).ok, 'an honest answer again: the new approval is seen');
  });

  it('a real agent: idle check-ins make no TUF request; an apply with an unchanged timestamp makes one 304', async () => {
    const token = await enrollToken(ts, 2);
    const d = seededDevice(ts, join(ts.dir, 'content'), 'light', token, {
      probationMs: 0,
      pollMs: 200,
      edit: (cfg) => {
        cfg.server = proxy.url;
      },
    });
    devices.push(d);
    start(d);
    await waitEnrolled(ts, d);
    await pin(ts, d, GOOD);
    await onVersion(d, GOOD, 120_000, 'the device on GOOD');
    // Idle: several check-ins with nothing to do, and not one TUF request among them.
    const n = proxy.seen.length;
    const checkins = () => proxy.seen.slice(n).filter((s) => s.path === '/v1/checkin').length;
    await until(
      async () => checkins(),
      (c) => c >= 5,
      60_000,
      'five idle check-ins',
    );
    assert.deepEqual(tufSince(n), [], 'an idle agent fetches no TUF metadata');
    // OLD is in the cached targets: applying it needs only the conditional request.
    const m = proxy.seen.length;
    await pin(ts, d, OLD);
    await onVersion(d, OLD, 120_000, 'the device back on OLD');
    const tuf = tufSince(m);
    assert.deepEqual(
      tuf.filter((s) => !s.path.startsWith('/v1/tuf/targets/')),
      ONE_304,
      tuf.map((s) => `${s.path} ${s.status}`).join(', '),
    );
  });
});

/** A blob server in a child process: serves FILE with Range support, or endless data for /endless. */
const BLOB_SERVER = `
const http = require('node:http'), fs = require('node:fs');
const file = process.argv[1]; const size = fs.statSync(file).size;
const s = http.createServer((req, res) => {
  console.error(req.url + ' ' + (req.headers.range || ''));
  if (req.url === '/endless') {
    res.writeHead(200); const chunk = Buffer.alloc(65536, 1); let sent = 0;
    const more = () => { while (sent < 512 * 1048576) { sent += chunk.length; if (!res.write(chunk)) return res.once('drain', more); } res.end(); };
    res.on('close', () => console.log('endless-closed ' + sent)); more(); return;
  }
  const m = /^bytes=(\\d+)-$/.exec(req.headers.range || '');
  const start = m ? Number(m[1]) : 0;
  res.writeHead(m ? 206 : 200, { 'content-length': size - start });
  fs.createReadStream(file, { start }).pipe(res);
});
s.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));`;

describe('streamed downloads', { timeout: 180_000 }, () => {
  let ts: TestServer;
  let blob: string;
  let sha256: string;
  let port: number;
  let proc: ReturnType<typeof spawnGroup>;
  let out = '';
  let err = '';
  const SIZE = 48 * 1024 * 1024;
  const cfg = (dir: string) => ({ state_dir: dir, retry: { attempts: 1, base: 1, max: 1 } });
  const log = pino({ level: 'silent' });

  before(async () => {
    ts = await startTestServer();
    blob = join(ts.dir, 'blob.bin');
    // Written and hashed a MiB at a time: the test never holds the artifact either.
    const h = createHash('sha256');
    const fd = openSync(blob, 'w');
    const mib = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < SIZE / mib.length; i++) {
      mib.fill(i % 251);
      mib.writeUInt32BE(i, 0);
      h.update(mib);
      writeSync(fd, mib);
    }
    closeSync(fd);
    sha256 = h.digest('hex');
    proc = spawnGroup(process.execPath, ['-e', BLOB_SERVER, blob]);
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    proc.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
    });
    port = Number(
      (await until(async () => /port (\d+)/.exec(out)?.[1], Boolean, 30_000, 'the blob server')) as string,
    );
  });

  after(async () => {
    await killProcess(proc);
    await ts?.close();
  });

  const server = () => ({ server: `http://127.0.0.1:${port}`, device_token: 'test' });

  it('a 48 MiB artifact streams through the hash to disk: memory grows by far less than the artifact', async () => {
    const dir = join(ts.dir, 'big');
    const mem = () => {
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const base = mem();
    let peak = base;
    const t = setInterval(() => {
      peak = Math.max(peak, mem());
    }, 2);
    try {
      const file = await download(
        { name: 'big.bin', sha256, length: SIZE, url: '/big' },
        server(),
        cfg(dir),
        log,
      );
      assert.equal(readdirSync(join(dir, 'downloads')).length, 1, 'no partial file left');
      assert.equal(file, join(dir, 'downloads', sha256));
    } finally {
      clearInterval(t);
    }
    // A generous guard, not a benchmark: a quarter of the artifact.
    assert.ok(peak - base < SIZE / 4, `memory grew by ${((peak - base) / 1048576).toFixed(1)} MiB`);
  });

  it('an interrupted download resumes with Range and is hashed from the partial file first', async () => {
    const dir = join(ts.dir, 'resume');
    const downloads = join(dir, 'downloads');
    await download({ name: 'x', sha256, length: SIZE, url: '/first' }, server(), cfg(dir), log);
    // Simulate the interruption: keep only the first 10 MiB + 3 bytes as the partial file.
    const full = readFileSync(join(downloads, sha256));
    writeFileSync(join(downloads, `${sha256}.part`), full.subarray(0, 10 * 1024 * 1024 + 3));
    (await import('node:fs')).rmSync(join(downloads, sha256));
    const file = await download(
      { name: 'x', sha256, length: SIZE, url: '/resumed' },
      server(),
      cfg(dir),
      log,
    );
    assert.ok(file.endsWith(sha256));
    assert.match(err, new RegExp(`/resumed bytes=${10 * 1024 * 1024 + 3}-`));
    // A partial file that is not a prefix of the blob: the hash fails, the partial file is removed.
    writeFileSync(join(downloads, `${sha256}.part`), Buffer.alloc(1024, 7));
    (await import('node:fs')).rmSync(join(downloads, sha256));
    await assert.rejects(
      download({ name: 'x', sha256, length: SIZE, url: '/bad-prefix' }, server(), cfg(dir), log),
      (e: unknown) => e instanceof StepError && e.cls === 'verify',
    );
    assert.ok(!existsSync(join(downloads, `${sha256}.part`)));
  });

  it('more bytes than offered are refused while streaming, not after', async () => {
    const dir = join(ts.dir, 'endless');
    const LIMIT = 1024 * 1024;
    await assert.rejects(
      download({ name: 'e', sha256, length: LIMIT, url: '/endless' }, server(), cfg(dir), log),
      (e: unknown) => e instanceof StepError && e.cls === 'verify' && /more than the offered/.test(e.message),
    );
    assert.deepEqual(readdirSync(join(dir, 'downloads')), [], 'the partial file is removed');
    const sent = Number(
      (await until(async () => /endless-closed (\d+)/.exec(out)?.[1], Boolean, 30_000, 'the cut')) as string,
    );
    assert.ok(sent < 64 * 1024 * 1024, `the server could send only ${sent} bytes before the cut`);
  });
});
