// The organisation's TUF repository: keys init, approval signing, the /v1/tuf routes, and `repo export`
// served by a plain static HTTP server and verified by an unmodified tuf-js client.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Updater } from 'tuf-js';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { BlobStore } from '../src/server/blobs.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import { exportTree } from '../src/trust/ops/export.ts';
import { serveStatic } from '../src/trust/ops/static-server.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { startTestServer } from './helpers/server.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'rf-trust-'));

test('keys init: 3-of-5 root, online keys, private keys 0600, root v1 signed by the threshold', () => {
  const dir = tmp();
  try {
    const { repo, root } = TufRepository.init(dir, { rootKeys: 5, rootThreshold: 3 });
    assert.equal(root.signed.version, 1);
    assert.equal(root.signed.roles.root.threshold, 3);
    assert.equal(root.signed.roles.root.keyIDs.length, 5);
    assert.equal(Object.keys(root.signatures).length, 5);
    for (const f of ['root-1.json', 'root-5.json', 'targets.json', 'snapshot.json', 'timestamp.json']) {
      assert.equal(statSync(join(repo.keyDir, f)).mode & 0o777, 0o600, f);
    }
    assert.deepEqual(repo.files(), [
      '1.root.json',
      '1.snapshot.json',
      '1.targets.json',
      'root.json',
      'timestamp.json',
    ]);
    assert.throws(() => TufRepository.init(dir), /already holds a TUF root/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('approval signs the release into targets; /v1/tuf serves it; tuf-js verifies from the server', async () => {
  const ts = await startTestServer();
  try {
    TufRepository.init(join(ts.dir, 'server'));
    const src = join(ts.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'app.bin'), 'hello release 1');
    await importRelease(ts.conn, 'app', '1.0.0', [join(src, 'app.bin')]);
    const before = await (await fetch(`${ts.url}/v1/tuf/timestamp.json`)).json();
    await api(ts.conn, 'POST', '/v1/admin/releases/app@1.0.0/approve', {});
    const after = await (await fetch(`${ts.url}/v1/tuf/timestamp.json`)).json();
    assert.equal(after.signed.version, before.signed.version + 1);
    const repo = TufRepository.open(join(ts.dir, 'server'))!;
    const t = repo.targets().signed.targets['app/1.0.0/app.bin'];
    assert.ok(t, 'target listed');
    assert.deepEqual(t.custom, { component: 'app', version: '1.0.0', name: 'app.bin', mode: 0o644 });
    // Approving again changes nothing.
    await api(ts.conn, 'POST', '/v1/admin/releases/app@1.0.0/approve', {});
    assert.equal(repo.timestamp().signed.version, after.signed.version);

    const dev = join(ts.dir, 'device');
    mkdirSync(dev);
    writeFileSync(join(dev, 'root.json'), await (await fetch(`${ts.url}/v1/tuf/1.root.json`)).text());
    const u = new Updater({
      metadataDir: dev,
      metadataBaseUrl: `${ts.url}/v1/tuf`,
      targetBaseUrl: `${ts.url}/v1/tuf/targets`,
      targetDir: dev,
    });
    const info = await u.getTargetInfo('app/1.0.0/app.bin');
    assert.ok(info);
    const got = await u.downloadTarget(info, join(dev, 'app.bin'));
    assert.equal(readFileSync(got, 'utf8'), 'hello release 1');
    // Unlisted paths are not served, even when the blob exists.
    const r = await fetch(`${ts.url}/v1/tuf/targets/app/1.0.0/${'0'.repeat(64)}.app.bin`);
    assert.equal(r.status, 404);
  } finally {
    await ts.close();
  }
});

test('repo export: a plain static HTTP server serves the tree; an unmodified tuf-js client verifies and downloads', async () => {
  const dir = tmp();
  try {
    const data = join(dir, 'data');
    const { repo } = TufRepository.init(data);
    const blobs = new BlobStore(join(data, 'blobs'));
    const content = Buffer.from('x'.repeat(100_000));
    const { Readable } = await import('node:stream');
    const b = await blobs.put(Readable.from([content]));
    await repo.addTargets(
      [
        {
          path: 'os/2.0/image.raw',
          sha256: b.sha256,
          length: b.length,
          custom: { component: 'os', version: '2.0' },
        },
      ],
      Date.now(),
    );
    const res = await exportTree(repo, blobs, join(dir, 'mirror'), { validForMs: 30 * 86_400_000 });
    assert.equal(res.targets, 1);
    assert.ok(Date.parse(res.expires) > Date.now() + 29 * 86_400_000, 'timestamp valid for the journey');
    const srv = await serveStatic(join(dir, 'mirror'));
    try {
      const dev = join(dir, 'device');
      mkdirSync(dev);
      writeFileSync(join(dev, 'root.json'), readFileSync(join(dir, 'mirror', '1.root.json')));
      const u = new Updater({
        metadataDir: dev,
        metadataBaseUrl: srv.url,
        targetBaseUrl: `${srv.url}/targets`,
        targetDir: dev,
      });
      await u.refresh();
      const info = await u.getTargetInfo('os/2.0/image.raw');
      assert.ok(info);
      const p = await u.downloadTarget(info, join(dev, 'image.raw'));
      assert.deepEqual(readFileSync(p), content);
      assert.equal(await u.getTargetInfo('os/6.6.6/image.raw'), undefined);
    } finally {
      await srv.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('repo gc: keeps releases a device uses and the newest; withdraws the rest from targets, then frees blobs', async () => {
  const ts = await startTestServer();
  try {
    const data = join(ts.dir, 'server');
    TufRepository.init(data);
    const src = join(ts.dir, 'src');
    mkdirSync(src);
    for (const v of ['1', '2', '3']) {
      writeFileSync(join(src, 'app.bin'), `app version ${v} `.repeat(100));
      await importRelease(ts.conn, 'app', v, [join(src, 'app.bin')]);
      await api(ts.conn, 'POST', `/v1/admin/releases/app@${v}/approve`, {});
    }
    // A real device enrolls and reports app@1 installed.
    const enr = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', {});
    const dev = await (
      await fetch(`${ts.url}/v1/enroll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: enr.token, name: 'd1' }),
      })
    ).json();
    const ci = await fetch(`${ts.url}/v1/checkin`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${dev.device_token}` },
      body: JSON.stringify({ components: [{ name: 'app', version: '1', state: 'idle' }] }),
    });
    assert.equal(ci.status, 200);
    const { collectGarbage } = await import('../src/server/services/release-gc.ts');
    const r = await collectGarbage(ts.srv.ctx.store.db, ts.srv.ctx.blobs, data);
    assert.deepEqual(r.dropped, ['app@2']);
    assert.deepEqual(r.kept.sort(), ['app@1', 'app@3']);
    assert.equal(r.blobs_freed, 1);
    assert.equal(r.bytes_freed, 'app version 2 '.length * 100);
    const repo = TufRepository.open(data)!;
    assert.deepEqual(Object.keys(repo.targets().signed.targets).sort(), ['app/1/app.bin', 'app/3/app.bin']);
    const rels = await api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases');
    assert.deepEqual(rels.map((x) => x.version).sort(), ['1', '3']);
  } finally {
    await ts.close();
  }
});

test('without keys (keys init never run) approval still works, unsigned, and /v1/tuf says why', async () => {
  const ts = await startTestServer();
  try {
    const src = join(ts.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'x.bin'), 'x');
    await importRelease(ts.conn, 'x', '1', [join(src, 'x.bin')]);
    assert.deepEqual(await api(ts.conn, 'POST', '/v1/admin/releases/x@1/approve', {}), {
      component: 'x',
      version: '1',
      approved: true,
    });
    const r = await fetch(`${ts.url}/v1/tuf/timestamp.json`);
    assert.equal(r.status, 404);
    assert.match((await r.json()).message, /keys init/);
    // Keys created later: the approved release is signed in when the server next starts.
    TufRepository.init(join(ts.dir, 'server'));
    await ts.srv.app.close();
    await ts.srv.ctx.store.close();
    const { createServer } = await import('../src/server/app.ts');
    const pino = (await import('pino')).default;
    const again = await createServer({
      dataDir: join(ts.dir, 'server'),
      logger: pino({ level: 'silent' }),
      tickMs: 50,
    });
    try {
      const repo = TufRepository.open(join(ts.dir, 'server'))!;
      assert.ok(repo.targets().signed.targets['x/1/x.bin'], 'signed in at start');
    } finally {
      await again.close();
    }
  } finally {
    await ts.close().catch(() => {});
  }
});
