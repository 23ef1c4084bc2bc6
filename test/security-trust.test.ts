// Security regressions in the trust layer, each reproduced with a real server, real ed25519 signatures and real CLI
// processes where the CLI is the subject:
//   1. vendor TUF metadata is stored only when it verifies against the vendor root the server pinned (poisoning);
//   2. attacker-chosen keys such as `__proto__` never reach a prototype in a signed-targets lookup (500 → 404);
//   3. a refused `bundle import` leaves nothing behind, whatever stage refused it;
//   4. `release import` refuses symlinks and special files instead of skipping them (`--follow-symlinks` opt-in).
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { Metadata, MetadataKind, Timestamp } from '@tufjs/models';
import { sql } from 'kysely';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { BIN } from '../src/demo/fleet.ts';
import { openStore } from '../src/server/db/database.ts';
import type { ReleaseView } from '../src/server/routes/admin-releases.ts';
import { exportBundle } from '../src/trust/ops/bundle-export.ts';
import { hashedTargetPath } from '../src/trust/ops/export.ts';
import { generateKey, type KeyFile, readKeyFile, readRoleKeys, signerOf } from '../src/trust/signer/keys.ts';
import { TufRepository, tufExpires } from '../src/trust/signer/tuf-repository.ts';
import { type BundleManifest, unpack } from '../src/trust/verifier/bundle-reader.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const DAY = 86_400_000;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

// Every CLI process a test starts; whatever is still running when the file ends (a failed or timed-out test) is
// killed here.
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** `ringfence ARGS` as a real process (asynchronous: the server under test runs in this process). */
function cli(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; out: string; stdout: string; stderr: string }>((res) => {
    const c = execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        children.delete(c);
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        res({ code, out: `${stdout}${stderr}`, stdout, stderr });
      },
    );
    children.add(c);
  });
}

/** Every file under dir (relative path → sha256), or {} when dir does not exist. */
function treeOf(dir: string, skip: (rel: string) => boolean = () => false): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      const rel = relative(dir, full);
      if (skip(rel)) continue;
      if (e.isDirectory()) walk(full);
      else out[rel] = sha256(readFileSync(full));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

/** A vendor's TUF repository (its own keys, unrelated to the organisation's). */
function vendorRepo(dir: string, opts: { rootKeys?: number; rootThreshold?: number } = {}) {
  const repo = TufRepository.init(dir, opts).repo;
  return { repo, root: join(repo.metadataDir, '1.root.json') };
}

/** The vendor signs `<component>/<version>/<file>` for every file of a folder into its targets. */
async function vendorSigns(vendor: TufRepository, component: string, version: string, dir: string) {
  await vendor.addTargets(
    readdirSync(dir)
      .sort()
      .map((f) => {
        const b = readFileSync(join(dir, f));
        return { path: `${component}/${version}/${f}`, sha256: sha256(b), length: b.length };
      }),
    Date.now(),
  );
}

/** The vendor's current metadata set as the CLI would upload it: every root, timestamp, its snapshot and targets. */
function currentSet(metadataDir: string): Record<string, Buffer> {
  const read = (n: string) => readFileSync(join(metadataDir, n));
  const ts = JSON.parse(read('timestamp.json').toString());
  const sv = ts.signed.meta['snapshot.json'].version as number;
  const tv = JSON.parse(read(`${sv}.snapshot.json`).toString()).signed.meta['targets.json'].version as number;
  const set: Record<string, Buffer> = {
    'timestamp.json': read('timestamp.json'),
    [`${sv}.snapshot.json`]: read(`${sv}.snapshot.json`),
    [`${tv}.targets.json`]: read(`${tv}.targets.json`),
  };
  for (const f of readdirSync(metadataDir)) if (/^\d+\.root\.json$/.test(f)) set[f] = read(f);
  return set;
}

function without(set: Record<string, Buffer>, name: string): Record<string, Buffer> {
  return Object.fromEntries(Object.entries(set).filter(([n]) => n !== name));
}

/** A timestamp like the given one (same snapshot unless told), with the given version, expiry and signing key. */
function forgeTimestamp(
  timestampBytes: Buffer,
  opts: { version: number; expires?: number; key: KeyFile; snapshotMeta?: Timestamp['snapshotMeta'] },
): Buffer {
  const cur = Metadata.fromJSON(MetadataKind.Timestamp, JSON.parse(timestampBytes.toString()));
  const md = new Metadata(
    new Timestamp({
      version: opts.version,
      specVersion: cur.signed.specVersion,
      expires: tufExpires(opts.expires ?? Date.now() + DAY),
      snapshotMeta: opts.snapshotMeta ?? cur.signed.snapshotMeta,
    }),
  );
  md.sign(signerOf(opts.key));
  return Buffer.from(JSON.stringify(md.toJSON()));
}

/** Root metadata with a new version, re-signed by exactly the given keys (nothing else changes). */
function resignRoot(rootBytes: Buffer, version: number, keys: KeyFile[]): Buffer {
  const cur = JSON.parse(rootBytes.toString());
  const md = Metadata.fromJSON(MetadataKind.Root, {
    ...cur,
    signed: { ...cur.signed, version },
    signatures: [],
  });
  for (const k of keys) md.sign(signerOf(k));
  return Buffer.from(JSON.stringify(md.toJSON()));
}

/** Writes a bundle container around a folder (the format of src/trust/bundle.ts: its checksums are not signatures). */
function packBundle(tree: string, manifest: BundleManifest, file: string): void {
  const names = Object.keys(treeOf(tree))
    .filter((n) => n !== 'MANIFEST.json')
    .sort((a, b) => Number(a === 'timestamp.json') - Number(b === 'timestamp.json') || a.localeCompare(b));
  const parts: Buffer[] = [Buffer.from('RFBUNDLE 1\n')];
  const entries: BundleManifest['entries'] = [];
  const put = (name: string, bytes: Buffer) => {
    const e = { name, length: bytes.length, sha256: sha256(bytes) };
    parts.push(Buffer.from(`${JSON.stringify(e)}\n`), bytes);
    return e;
  };
  for (const n of names) entries.push(put(n, readFileSync(join(tree, n))));
  put('MANIFEST.json', Buffer.from(JSON.stringify({ ...manifest, entries }, null, 2)));
  const body = Buffer.concat(parts);
  writeFileSync(file, Buffer.concat([body, Buffer.from(`RFBUNDLE-END ${sha256(body)}\n`)]));
}

async function putVendor(ts: TestServer, vendor: string, files: Record<string, Buffer>, root?: Buffer) {
  const res = await fetch(`${ts.url}/v1/admin/vendor-tuf/${vendor}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      files: Object.fromEntries(Object.entries(files).map(([n, b]) => [n, b.toString('base64')])),
      ...(root ? { root: root.toString('base64') } : {}),
    }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { message?: string } };
}

describe('security: trust', { timeout: 480_000 }, () => {
  it('vendor metadata is stored only when it verifies against the vendor root the server pinned (no poisoning; rotation followed)', async (t) => {
    const ts = await startTestServer();
    t.after(() => ts.close());
    const env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    const { repo: vendor, root: vendorRoot } = vendorRepo(join(ts.dir, 'vendor'));
    const stored = join(ts.srv.ctx.dataDir, 'vendor-tuf', 'acme');
    const release = async (v: string) => {
      const dir = join(ts.dir, 'rel', v);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'app.bin'), `app ${v}\n`);
      await vendorSigns(vendor, 'app', v, dir);
      return dir;
    };
    const importArgs = (v: string, dir: string) => [
      'release',
      'import',
      '--component',
      'app',
      '--version',
      v,
      dir,
      '--vendor-tuf',
      vendor.metadataDir,
      '--vendor-root',
      vendorRoot,
      '--vendor-name',
      'acme',
    ];
    const refused = async (what: string, files: Record<string, Buffer>, re: RegExp, root?: Buffer) => {
      const before = treeOf(stored);
      const r = await putVendor(ts, 'acme', files, root);
      assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message ?? '', /^vendor acme metadata refused: /, what);
      assert.match(r.body.message ?? '', re, what);
      assert.equal((r.body.message ?? '').split('\n').length, 1, `${what}: one line`);
      assert.deepEqual(treeOf(stored), before, `${what}: nothing was written`);
    };

    // The honest import pins the vendor's root on the server.
    const first = await cli(importArgs('1.0.0', await release('1.0.0')), env);
    assert.equal(first.code, 0, first.out);
    const oldSet = currentSet(vendor.metadataDir); // validly signed, soon older
    assert.ok(readFileSync(join(stored, 'timestamp.json')).equals(oldSet['timestamp.json']));
    await release('1.0.1'); // the vendor moves on: timestamp v3
    const honest = currentSet(vendor.metadataDir);
    const vendorTsKey = readRoleKeys(vendor.keyDir, 'timestamp')[0];

    // Poisoning: a timestamp with a huge version, signed by a key the vendor's root does not list.
    await refused(
      'timestamp signed by a foreign key',
      {
        ...honest,
        'timestamp.json': forgeTimestamp(honest['timestamp.json'], {
          version: 1_000_000,
          key: generateKey('timestamp'),
        }),
      },
      /timestamp.*signed by 0\/1 keys/,
    );
    // A root v2 signed only by the impostor's own key, and everything below it signed by the impostor.
    const impostor = vendorRepo(join(ts.dir, 'impostor')).repo;
    const impostorRoot = resignRoot(readFileSync(join(impostor.metadataDir, '1.root.json')), 2, [
      readKeyFile(join(impostor.keyDir, 'root-1.json')),
    ]);
    await refused(
      'a new root not signed by the pinned root',
      {
        ...without(currentSet(impostor.metadataDir), '1.root.json'),
        '2.root.json': impostorRoot,
        'timestamp.json': forgeTimestamp(readFileSync(join(impostor.metadataDir, 'timestamp.json')), {
          version: 1_000_000,
          key: readRoleKeys(impostor.keyDir, 'timestamp')[0],
        }),
      },
      /2\.root\.json.*signed by 0\/1 keys/,
    );
    // Mix-and-match: the current timestamp over an older, validly signed snapshot under the current name.
    const sName = Object.keys(honest).find((n) => n.endsWith('.snapshot.json'))!;
    const oldSnap = Object.keys(oldSet).find((n) => n.endsWith('.snapshot.json'))!;
    await refused(
      'mix-and-match snapshot',
      { ...honest, [sName]: oldSet[oldSnap] },
      /snapshot\.json.*(hash|length)/,
    );
    // Freeze: correctly signed by the vendor's timestamp key, expired.
    await refused(
      'expired timestamp',
      {
        ...honest,
        'timestamp.json': forgeTimestamp(honest['timestamp.json'], {
          version: 1_000,
          expires: Date.now() - DAY,
          key: vendorTsKey,
        }),
      },
      /timestamp\.json expired/,
    );
    // Another vendor's root offered as the operator's root for an already pinned vendor.
    await refused(
      'an unrelated root',
      honest,
      /1\.root\.json.*pinned/,
      readFileSync(join(impostor.metadataDir, '1.root.json')),
    );
    // Not TUF metadata at all.
    await refused('file names', { ...honest, constructor: Buffer.from('{}') }, /not TUF metadata/);

    // The honest current set is stored (no root needed once pinned) ...
    const up = await putVendor(ts, 'acme', honest);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    assert.equal(up.body.stored, true);
    assert.ok(readFileSync(join(stored, 'timestamp.json')).equals(honest['timestamp.json']));
    // ... and an older, validly signed set after it is not stored (a rollback, as before): nothing changes.
    const before = treeOf(stored);
    const rb = await putVendor(ts, 'acme', oldSet);
    assert.equal(rb.status, 200, JSON.stringify(rb.body));
    assert.equal(rb.body.stored, false);
    assert.deepEqual(treeOf(stored), before);

    // The genuine metadata is still accepted afterwards.
    const next = await cli(importArgs('1.1.0', await release('1.1.0')), env);
    assert.equal(next.code, 0, next.out);
    assert.ok(
      readFileSync(join(stored, 'timestamp.json')).equals(
        readFileSync(join(vendor.metadataDir, 'timestamp.json')),
      ),
      'the vendor timestamp is the one published',
    );

    // A vendor seen for the first time: the set must come with the root to pin, and that root must be
    // self-signed to its threshold.
    const globex = vendorRepo(join(ts.dir, 'globex'), { rootKeys: 2, rootThreshold: 2 });
    const noRoot = await putVendor(ts, 'globex', currentSet(globex.repo.metadataDir));
    assert.equal(noRoot.status, 400);
    assert.match(noRoot.body.message ?? '', /vendor globex .*no pinned root/);
    const halfSigned = resignRoot(readFileSync(globex.root), 1, [
      readKeyFile(join(globex.repo.keyDir, 'root-1.json')),
    ]);
    const half = await putVendor(
      ts,
      'globex',
      { ...currentSet(globex.repo.metadataDir), '1.root.json': halfSigned },
      halfSigned,
    );
    assert.equal(half.status, 400);
    assert.match(half.body.message ?? '', /root.*signed by 1\/2 keys/);
    assert.equal(existsSync(join(ts.srv.ctx.dataDir, 'vendor-tuf', 'globex')), false);
    const ok = await putVendor(ts, 'globex', currentSet(globex.repo.metadataDir), readFileSync(globex.root));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.stored, true);

    // Root rotation: the vendor replaces its root key and its timestamp key (v2, signed by v1's key and the new
    // one). The operator still holds root v1; the server follows the chain and pins v2.
    const oldRootKey = readKeyFile(join(vendor.keyDir, 'root-1.json'));
    const newRootKey = generateKey('root');
    await vendor.rotateRoot({
      oldRootKeys: [oldRootKey],
      newRootKeys: [newRootKey],
      threshold: 1,
      rotateOnline: ['timestamp'],
    });
    const rotated = await cli(importArgs('1.2.0', await release('1.2.0')), env);
    assert.equal(rotated.code, 0, rotated.out);
    assert.ok(
      readFileSync(join(stored, '2.root.json')).equals(readFileSync(join(vendor.metadataDir, '2.root.json'))),
    );
    assert.ok(
      readFileSync(join(stored, 'timestamp.json')).equals(
        readFileSync(join(vendor.metadataDir, 'timestamp.json')),
      ),
    );
    const afterRotation = currentSet(vendor.metadataDir);
    // The revoked keys no longer count: a root v3 signed by the old root key, a timestamp by the old timestamp key.
    await refused(
      'root v3 signed by the revoked root key',
      { ...afterRotation, '3.root.json': resignRoot(afterRotation['2.root.json'], 3, [oldRootKey]) },
      /3\.root\.json.*signed by 0\/1 keys/,
    );
    await refused(
      'timestamp signed by the revoked timestamp key',
      {
        ...afterRotation,
        'timestamp.json': forgeTimestamp(afterRotation['timestamp.json'], {
          version: 1_000,
          key: vendorTsKey,
        }),
      },
      /timestamp.*signed by 0\/1 keys/,
    );

    // A server poisoned before pinning existed (unverified files from an older version): the first genuine upload
    // pins the operator's root and replaces them; nothing unverified stays published.
    const legacy = join(ts.srv.ctx.dataDir, 'vendor-tuf', 'initech');
    mkdirSync(legacy, { recursive: true });
    writeFileSync(
      join(legacy, 'timestamp.json'),
      forgeTimestamp(afterRotation['timestamp.json'], { version: 1_000_000, key: generateKey('timestamp') }),
    );
    writeFileSync(join(legacy, '99.snapshot.json'), '{}');
    const healed = await cli(
      importArgs('1.3.0', await release('1.3.0')).map((a) => (a === 'acme' ? 'initech' : a)),
      env,
    );
    assert.equal(healed.code, 0, healed.out);
    assert.ok(
      readFileSync(join(legacy, 'timestamp.json')).equals(
        readFileSync(join(vendor.metadataDir, 'timestamp.json')),
      ),
    );
    assert.equal(existsSync(join(legacy, '99.snapshot.json')), false);
  });

  it('prototype keys in target and metadata lookups answer 404, never 500', async (t) => {
    const ts = await startTestServer();
    t.after(() => ts.close());
    TufRepository.init(ts.srv.ctx.dataDir);
    const hex = 'a'.repeat(64);
    const keys = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'];
    const paths = [
      ...keys.map((k) => `/v1/tuf/targets/${hex}.${k}`),
      ...keys.map((k) => `/v1/tuf/targets/${k}/${hex}.${k}`),
      ...keys.map((k) => `/v1/tuf/${k}`),
      ...keys.map((k) => `/v1/tuf/${k}.json`),
      ...keys.map((k) => `/v1/vendor-tuf/${k}/timestamp.json`),
      ...keys.map((k) => `/v1/vendor-tuf/acme/${k}`),
    ];
    for (const p of paths) {
      const res = await fetch(`${ts.url}${p}`);
      await res.arrayBuffer();
      assert.ok(res.status >= 400 && res.status < 500, `${p}: ${res.status}`);
    }
    // Admin uploads with such names are refused too (400), not stored.
    for (const body of ['{"files":{"__proto__":"e30="}}', '{"files":{"constructor":"e30="}}']) {
      const res = await fetch(`${ts.url}/v1/admin/vendor-tuf/acme`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${ts.conn.token}`, 'content-type': 'application/json' },
        body,
      });
      await res.arrayBuffer();
      assert.ok(res.status >= 400 && res.status < 500, `${body}: ${res.status}`);
    }
    assert.equal(existsSync(join(ts.srv.ctx.dataDir, 'vendor-tuf', 'acme')), false);
  });

  it('a refused bundle import leaves nothing behind, whatever stage refuses it', async (t) => {
    const ts = await startTestServer();
    t.after(() => ts.close());
    const data = ts.srv.ctx.dataDir;
    const repo = TufRepository.init(data).repo;
    const orgRoot = join(repo.metadataDir, '1.root.json');
    const src = join(ts.dir, 'app-1.0.0');
    mkdirSync(src);
    writeFileSync(join(src, 'a.bin'), 'alpha\n');
    writeFileSync(join(src, 'b.bin'), 'beta\n');
    await importRelease(ts.conn, 'app', '1.0.0', [src]);
    await api(ts.conn, 'POST', '/v1/admin/releases/app@1.0.0/approve', {});
    const { repo: vendor, root: vendorRoot } = vendorRepo(join(ts.dir, 'vendor'));
    await vendorSigns(vendor, 'app', '1.0.0', src);
    const bundle = join(ts.dir, 'app.rfb');
    await exportBundle(repo, ts.srv.ctx.blobs, bundle, { validForMs: 7 * DAY });
    const honest = join(ts.dir, 'honest');
    const manifest = unpack(bundle, honest);
    // The vendor's metadata as a server that imported with --vendor-tuf would carry it.
    cpSync(vendor.metadataDir, join(honest, 'vendor-tuf', 'acme'), { recursive: true });
    let n = 0;
    const variant = (edit: (tree: string, m: BundleManifest) => BundleManifest | undefined) => {
      const tree = join(ts.dir, `variant-${++n}`);
      cpSync(honest, tree, { recursive: true });
      const m = edit(tree, structuredClone(manifest)) ?? manifest;
      const file = `${tree}.rfb`;
      packBundle(tree, m, file);
      return file;
    };

    // The branch office: a fresh data folder, its database created up front.
    const branch = join(ts.dir, 'branch');
    const releasesAt = async () => {
      const store = await openStore({ dataDir: branch });
      try {
        return (
          await store.db.selectFrom('releases').select(['component', 'version', 'artifacts']).execute()
        ).map((r) => `${r.component}@${r.version} ${r.artifacts}`);
      } finally {
        await store.close();
      }
    };
    await releasesAt();
    const state = async () => ({
      files: treeOf(branch, (rel) => /^ringfence\.db/.test(rel) || rel === join('blobs', 'tmp')),
      releases: await releasesAt(),
    });
    const importInto = (file: string, ...extra: string[]) =>
      cli(['bundle', 'import', file, '--data', branch, '--root', orgRoot, ...extra]);
    const refusedImport = async (what: string, file: string, re: RegExp, ...extra: string[]) => {
      const before = await state();
      const r = await importInto(file, ...extra);
      assert.equal(r.code, 1, `${what}: ${r.out}`);
      assert.match(r.stderr, /bundle refused: /, what);
      assert.match(r.stderr, re, what);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line: ${r.stderr}`);
      assert.deepEqual(await state(), before, `${what}: nothing left behind`);
      assert.deepEqual(
        readdirSync(branch).filter((f) => f.startsWith('.')),
        [],
        `${what}: no scratch folders`,
      );
    };

    // Vendor metadata signed by keys the vendor's root does not list (everything else in the bundle is fine).
    const impostor = vendorRepo(join(ts.dir, 'impostor')).repo;
    await vendorSigns(impostor, 'app', '1.0.0', src);
    const forgedVendor = variant((tree) => {
      const dir = join(tree, 'vendor-tuf', 'acme');
      for (const f of readdirSync(dir)) if (f !== '1.root.json') rmSync(join(dir, f));
      for (const [name, bytes] of Object.entries(currentSet(impostor.metadataDir)))
        if (name !== '1.root.json') writeFileSync(join(dir, name), bytes);
      return undefined;
    });
    await refusedImport(
      'forged vendor metadata',
      forgedVendor,
      /vendor acme .*signed by 0\/1 keys/,
      '--vendor-root',
      `acme=${vendorRoot}`,
    );
    // Vendor metadata for a vendor this server has never pinned, and no root given for it.
    const honestBundle = variant(() => undefined);
    await refusedImport('unpinned vendor', honestBundle, /vendor acme .*no pinned root.*--vendor-root/);
    // The manifest lists the same release twice, with different files (both verify against the signed targets).
    const twice = variant((_tree, m) => {
      const rel = m.releases[0];
      m.releases = [{ ...rel, artifacts: rel.artifacts.filter((a) => a.name === 'a.bin') }, rel];
      return m;
    });
    await refusedImport(
      'the same release twice',
      twice,
      /app@1\.0\.0/,
      '--vendor-root',
      `acme=${vendorRoot}`,
    );
    // A blob whose bytes do not match its signed hash (the container checksums are recomputed: they are no
    // signatures).
    const badBlob = variant((tree, m) => {
      const a = m.releases[0].artifacts.find((x) => x.name === 'a.bin')!;
      const f = join(tree, 'targets', hashedTargetPath('app/1.0.0/a.bin', a.sha256));
      const b = readFileSync(f);
      b[0] ^= 0x20;
      writeFileSync(f, b);
      return undefined;
    });
    await refusedImport(
      'a tampered blob',
      badBlob,
      /app@1\.0\.0.*(hash|tampered)/,
      '--vendor-root',
      `acme=${vendorRoot}`,
    );
    // Everything verifies, the blobs and metadata are written, then the commit point itself fails (the branch's
    // database refuses the insert): every file the import wrote is removed again.
    const store = await openStore({ dataDir: branch });
    await sql`CREATE TRIGGER rf_refuse BEFORE INSERT ON releases BEGIN SELECT RAISE(ABORT, 'simulated failure at the commit point'); END`.execute(
      store.db,
    );
    await store.close();
    await refusedImport(
      'the database commit fails',
      honestBundle,
      /simulated failure/,
      '--vendor-root',
      `acme=${vendorRoot}`,
    );
    const store2 = await openStore({ dataDir: branch });
    await sql`DROP TRIGGER rf_refuse`.execute(store2.db);
    await store2.close();

    // The honest bundle imports: releases, blobs, the organisation's metadata, the vendor's metadata (pinned).
    const good = await importInto(honestBundle, '--vendor-root', `acme=${vendorRoot}`, '--json');
    assert.equal(good.code, 0, good.out);
    assert.deepEqual(JSON.parse(good.stdout).added, ['app@1.0.0']);
    assert.ok(existsSync(join(branch, 'tuf', 'metadata', 'timestamp.json')));
    assert.ok(
      readFileSync(join(branch, 'vendor-tuf', 'acme', 'timestamp.json')).equals(
        readFileSync(join(vendor.metadataDir, 'timestamp.json')),
      ),
    );

    // Now pinned: forged vendor metadata is refused without any --vendor-root.
    await refusedImport(
      'forged vendor metadata, vendor pinned',
      forgedVendor,
      /vendor acme .*signed by 0\/1 keys/,
    );
    // A release that clashes with an existing immutable release: the organisation re-signed app@1.0.0 with other
    // bytes for a.bin. The branch keeps its release and no blob of the refused one stays.
    const other = Buffer.from('ALPHA, other bytes\n');
    const otherBlob = await ts.srv.ctx.blobs.put(Readable.from([other]));
    await repo.addTargets(
      [
        {
          path: 'app/1.0.0/a.bin',
          sha256: otherBlob.sha256,
          length: otherBlob.length,
          custom: { component: 'app', version: '1.0.0', name: 'a.bin' },
        },
      ],
      Date.now(),
    );
    const clash = join(ts.dir, 'clash.rfb');
    await exportBundle(repo, ts.srv.ctx.blobs, clash, { validForMs: 7 * DAY });
    await refusedImport('a clashing release', clash, /app@1\.0\.0 exists here with other content/);
    assert.equal(existsSync(join(branch, 'blobs', otherBlob.sha256.slice(0, 2), otherBlob.sha256)), false);
  });

  it('release import refuses symlinks and special files unless --follow-symlinks (then still refuses loops and special files)', async (t) => {
    const ts = await startTestServer();
    t.after(() => ts.close());
    const env = { RINGFENCE_SERVER: ts.url, RINGFENCE_TOKEN: ts.conn.token };
    const base = join(ts.dir, 'files');
    mkdirSync(base);
    const target = join(base, 'target.bin');
    writeFileSync(target, 'the real bytes\n');
    const fifo = join(base, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const sock = join(base, 'sock');
    const srv: NetServer = createNetServer();
    await new Promise<void>((res) => srv.listen(sock, res));
    t.after(() => new Promise<void>((res) => srv.close(() => res())));

    let v = 0;
    /** A folder with a regular file plus one extra entry made by `add`. */
    const folder = (add: (dir: string) => void) => {
      const dir = join(base, `rel-${++v}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'a.bin'), 'alpha\n');
      add(dir);
      return dir;
    };
    const blobCount = () => Object.keys(treeOf(ts.srv.ctx.blobs.root, (rel) => rel === 'tmp')).length;
    const releases = () => api<ReleaseView[]>(ts.conn, 'GET', '/v1/admin/releases');
    const importArgs = (version: string, ...paths: string[]) => [
      'release',
      'import',
      '--component',
      'app',
      '--version',
      version,
      ...paths,
    ];
    const refusedImport = async (what: string, args: string[], re: RegExp) => {
      const r = await cli(args, env);
      assert.equal(r.code, 1, `${what}: ${r.out}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line: ${r.stderr}`);
      assert.match(r.stderr, re, what);
      assert.equal(blobCount(), 0, `${what}: nothing uploaded`);
      assert.deepEqual(await releases(), [], `${what}: no release`);
    };

    const linked = folder((d) => symlinkSync(target, join(d, 'link.bin')));
    await refusedImport(
      'symlink in a folder',
      importArgs('1', linked),
      /link\.bin is a symbolic link.*--follow-symlinks/,
    );
    await refusedImport('symlink given directly', importArgs('2', join(linked, 'link.bin')), /symbolic link/);
    const withFifo = folder((d) => execFileSync('mkfifo', [join(d, 'fifo')]));
    await refusedImport('FIFO in a folder', importArgs('3', withFifo), /fifo is a FIFO/);
    await refusedImport(
      'FIFO, --follow-symlinks',
      [...importArgs('3', withFifo), '--follow-symlinks'],
      /fifo is a FIFO/,
    );
    const withSock = folder((d) => symlinkSync(sock, join(d, 'sock')));
    await refusedImport(
      'socket behind a symlink',
      [...importArgs('4', withSock), '--follow-symlinks'],
      /sock is a socket/,
    );
    await refusedImport('socket given directly', importArgs('4', sock), /sock is a socket/);
    await refusedImport(
      'character device',
      importArgs('5', '/dev/null'),
      /\/dev\/null is a character device/,
    );
    const toFifo = folder((d) => symlinkSync(fifo, join(d, 'to-pipe')));
    await refusedImport(
      'symlink to a FIFO',
      [...importArgs('6', toFifo), '--follow-symlinks'],
      /to-pipe is a FIFO/,
    );
    const toDev = folder((d) => symlinkSync('/dev/zero', join(d, 'zero')));
    await refusedImport(
      'symlink to a device',
      [...importArgs('7', toDev), '--follow-symlinks'],
      /zero is a character device/,
    );
    const dangling = folder((d) => symlinkSync(join(base, 'nowhere'), join(d, 'gone')));
    await refusedImport(
      'broken symlink',
      [...importArgs('8', dangling), '--follow-symlinks'],
      /gone is a broken symbolic link/,
    );
    const loop = folder((d) => {
      symlinkSync(join(d, 'b'), join(d, 'a'));
      symlinkSync(join(d, 'a'), join(d, 'b'));
    });
    await refusedImport(
      'symlink loop',
      [...importArgs('9', loop), '--follow-symlinks'],
      /symbolic link loop/,
    );
    const dirLoop = folder((d) => {
      mkdirSync(join(d, 'sub'));
      symlinkSync(d, join(d, 'sub', 'up'));
    });
    await refusedImport(
      'folder symlink back to an ancestor',
      [...importArgs('10', dirLoop), '--follow-symlinks'],
      /up is a symbolic link loop/,
    );

    // --follow-symlinks: a link to a regular file is imported under the link's name with the target's bytes.
    const ok = await cli([...importArgs('11', linked), '--follow-symlinks', '--json'], env);
    assert.equal(ok.code, 0, ok.out);
    const rel = (await releases()).find((r) => r.version === '11')!;
    assert.deepEqual(
      rel.artifacts.map((a) => [a.name, a.sha256]),
      [
        ['a.bin', sha256('alpha\n')],
        ['link.bin', sha256('the real bytes\n')],
      ],
    );
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
