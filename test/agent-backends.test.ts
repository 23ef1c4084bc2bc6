// Apply backends with real files, real scripts and real HTTP downloads: `file`, `exec` and hooks, staging into an
// unwritable releases folder, and download retries with backoff.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { stringify } from 'yaml';
import { Agent, type Offered } from '../src/agent/agent.ts';
import { loadAgentConfig } from '../src/agent/config.ts';
import { backoff } from '../src/agent/retry.ts';

const blobs = new Map<string, Buffer>();
let failNext = 0; // the blob server answers 503 this many times (a flaky mirror)
let requests = 0;

function offer(component: string, version: string, files: Record<string, string>): Offered {
  const artifacts = Object.entries(files).map(([name, text]) => {
    const buf = Buffer.from(text);
    const sha256 = createHash('sha256').update(buf).digest('hex');
    blobs.set(sha256, buf);
    return { name, sha256, length: buf.length, url: `/v1/blobs/${sha256}` };
  });
  return { component, version, artifacts };
}

describe('apply backends', () => {
  let dir: string;
  let http: Server;
  let id: { server: string; device_token: string };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-backends-'));
    http = createServer((req, res) => {
      requests++;
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end('busy');
        return;
      }
      const b = blobs.get(req.url!.split('/').pop()!);
      if (!b) res.writeHead(404).end();
      else res.writeHead(200, { 'content-length': b.length }).end(b);
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    id = { server: `http://127.0.0.1:${(http.address() as { port: number }).port}`, device_token: 't' };
  });
  after(() => {
    http.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function agentWith(name: string, component: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const root = join(dir, name);
    mkdirSync(root, { recursive: true });
    const file = join(root, 'agent.yaml');
    writeFileSync(
      file,
      stringify({
        state_dir: './state',
        retry: { base: '20ms', max: '100ms' },
        ...extra,
        components: [component],
      }),
    );
    const a = new Agent(loadAgentConfig(file), pino({ level: 'silent' }));
    return { a, root, comp: a.cfg.components[0] };
  }

  it('file: one file replaced atomically, previous kept, a failing version put back', async () => {
    const { a, root, comp } = agentWith('file', {
      name: 'pg-config',
      backend: { type: 'file', path: './etc/postgresql.conf' },
      health: [{ name: 'sane', file: './etc/postgresql.conf', contains: '^max_connections = [1-9]' }],
    });
    mkdirSync(join(root, 'etc'));
    const target = join(root, 'etc', 'postgresql.conf');
    let j = await a.apply(
      comp,
      offer('pg-config', '1', { 'postgresql.conf': 'max_connections = 100\n' }),
      id,
    );
    assert.equal(j.current, '1');
    j = await a.apply(comp, offer('pg-config', '2', { 'postgresql.conf': 'max_connections = 200\n' }), id);
    assert.equal(j.current, '2');
    assert.equal(readFileSync(target, 'utf8'), 'max_connections = 200\n');
    j = await a.apply(comp, offer('pg-config', '3', { 'postgresql.conf': 'max_connections = 0\n' }), id);
    assert.equal(j.current, '2', 'failing health check: rolled back');
    assert.deepEqual(j.quarantined, ['3']);
    assert.equal(readFileSync(target, 'utf8'), 'max_connections = 200\n');
    assert.ok(readdirSync(join(root, 'etc', '.postgresql.conf.rf')).includes('1'), 'previous versions kept');
    const report = a.journal.outbox().find((r) => r.version === '3')!;
    assert.equal(report.outcome, 'rolled-back');
    assert.equal(report.class, 'health');
    const checks = (report.detail as { checks: Array<{ name: string; output: string; durationMs: number }> })
      .checks;
    assert.equal(checks[0].name, 'sane');
    assert.match(checks[0].output, /does not match/);
    assert.equal(typeof checks[0].durationMs, 'number');
  });

  it('exec: operator commands for stage/activate/commit/rollback and hooks run in order; failures roll back', async () => {
    const { a, root, comp } = agentWith('exec', {
      name: 'os',
      backend: {
        type: 'exec',
        path: './work',
        // Generous for the commands that must finish on a busy machine; the hanging one sleeps far longer.
        timeout: '5s',
        stage: 'echo "stage $RINGFENCE_VERSION $(cat $RINGFENCE_RELEASE_DIR/image)" >> ../steps',
        activate:
          'if [ "$RINGFENCE_VERSION" = hang ]; then sleep 30; fi; echo "activate $RINGFENCE_VERSION" >> ../steps; echo $RINGFENCE_VERSION > ../deployed',
        commit: 'echo "commit $RINGFENCE_VERSION" >> ../steps',
        rollback: 'echo "rollback $RINGFENCE_VERSION" >> ../steps; echo $RINGFENCE_VERSION > ../deployed',
      },
      hooks: {
        before_activate: 'echo "before-activate $RINGFENCE_VERSION" >> ../steps',
        after_activate: 'echo "after-activate $RINGFENCE_VERSION" >> ../steps',
        after_rollback: 'echo "after-rollback $RINGFENCE_VERSION" >> ../steps',
      },
      health: [{ name: 'booted', exec: 'grep -qv bad ../deployed', timeout: '10s' }],
    });
    const steps = () => readFileSync(join(root, 'steps'), 'utf8').trim().split('\n');
    let j = await a.apply(comp, offer('os', 'v1', { image: 'image-1' }), id);
    assert.equal(j.current, 'v1');
    assert.deepEqual(steps(), [
      'stage v1 image-1',
      'before-activate v1',
      'activate v1',
      'after-activate v1',
      'commit v1',
    ]);
    rmSync(join(root, 'steps'));
    j = await a.apply(comp, offer('os', 'bad', { image: 'image-bad' }), id);
    assert.equal(j.current, 'v1');
    assert.deepEqual(steps(), [
      'stage bad image-bad',
      'before-activate bad',
      'activate bad',
      'after-activate bad',
      'rollback v1',
      'after-rollback v1',
    ]);
    assert.equal(readFileSync(join(root, 'deployed'), 'utf8').trim(), 'v1');
    // A hanging activate command is killed at its timeout and undone.
    rmSync(join(root, 'steps'));
    const t0 = Date.now();
    j = await a.apply(comp, offer('os', 'hang', { image: 'image-h' }), id);
    assert.ok(Date.now() - t0 < 25_000, 'cut at its timeout, long before the sleep ends');
    assert.equal(j.current, 'v1');
    assert.ok(j.quarantined.includes('hang'));
    assert.equal(a.journal.outbox().find((r) => r.version === 'hang')?.class, 'activate');
    assert.match(a.journal.outbox().find((r) => r.version === 'hang')?.reason ?? '', /timed out/);
    assert.ok(steps().includes('rollback v1'));
  });

  it('unwritable releases folder during staging: clear error, running release untouched', async () => {
    const { a, root, comp } = agentWith('unwritable', {
      name: 'app',
      backend: { type: 'dir', path: './app' },
    });
    let j = await a.apply(comp, offer('app', '1', { 'a.txt': 'one' }), id);
    assert.equal(j.current, '1');
    // Tests run as root, so permissions do not stop writes: a file where the releases folder must be does.
    rmSync(join(root, 'app', 'releases'), { recursive: true });
    mkdirSync(join(root, 'app', 'releases-moved', '1'), { recursive: true });
    writeFileSync(join(root, 'app', 'releases-moved', '1', 'a.txt'), 'one');
    writeFileSync(join(root, 'app', 'releases'), 'not a folder');
    rmSync(join(root, 'app', 'current'));
    symlinkSync(join('releases-moved', '1'), join(root, 'app', 'current'));
    await assert.rejects(
      a.apply(comp, offer('app', '2', { 'a.txt': 'two' }), id),
      (e: Error & { cls?: string }) => {
        assert.equal(e.cls, 'stage');
        assert.match(e.message, /cannot stage 2 in .*releases: ENOTDIR/);
        return true;
      },
    );
    assert.equal(readlinkSync(join(root, 'app', 'current')), join('releases-moved', '1'));
    assert.equal(readFileSync(join(root, 'app', 'current', 'a.txt'), 'utf8'), 'one');
    j = a.journal.read('app');
    assert.equal(j.current, '1');
    assert.equal(j.txn, null);
    assert.equal(a.journal.outbox().find((r) => r.version === '2')?.class, 'stage');
  });

  it('downloads: transient failures retried with backoff, corrupt content never retried', async () => {
    const { a, comp } = agentWith('retry', { name: 'r', backend: { type: 'dir', path: './app' } });
    failNext = 2;
    requests = 0;
    const j = await a.apply(comp, offer('r', '1', { 'x.bin': 'payload' }), id);
    assert.equal(j.current, '1');
    assert.equal(requests, 3, 'two 503s, then success');
    const o = offer('r', '2', { 'x.bin': 'payload-2' });
    o.artifacts[0].sha256 = '0'.repeat(64); // what the metadata says differs from what the mirror serves
    blobs.set(o.artifacts[0].sha256, Buffer.from('payload-2'));
    requests = 0;
    await assert.rejects(a.apply(comp, o, id), /expected sha256/);
    assert.equal(requests, 1, 'verify failures are not retried');
    assert.equal(a.journal.read('r').current, '1');
    failNext = 100;
    requests = 0;
    await assert.rejects(a.apply(comp, offer('r', '3', { 'x.bin': 'three' }), id), /HTTP 503/);
    assert.equal(requests, 4, 'retry.attempts (default 4) then give up; retried at the next check-in');
    failNext = 0;
    assert.ok(!existsSync(join(a.cfg.components[0].backend.path, 'releases', '3')));
  });

  it('backoff grows exponentially, is capped, and jitters within [0.5, 1) of the step', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 10].map((n) => backoff(n, 100, 1000, () => 0.999999)),
      [100, 200, 400, 800, 1000],
    );
    assert.deepEqual(
      [1, 2, 3].map((n) => backoff(n, 100, 1000, () => 0)),
      [50, 100, 200],
    );
  });
});
