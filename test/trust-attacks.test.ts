// TUF attacks against the device verifier: real ed25519 signatures, a real static HTTP mirror on loopback,
// the real tuf-js client. Every attack must be refused with a clear reason and leave the device's trusted
// metadata exactly as it was (the device stays on its last good state).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { Metadata, MetadataKind, Timestamp } from '@tufjs/models';
import { BlobStore } from '../src/store/blobs.ts';
import { type OfferedArtifact, type VerifyResult, verifyRelease } from '../src/trust/device-verifier.ts';
import { exportTree, hashedTargetPath } from '../src/trust/export.ts';
import { generateKey, readKeyFile, readRoleKeys, signerOf } from '../src/trust/keys.ts';
import { Repository, tufExpires } from '../src/trust/repository.ts';
import { type StaticServer, serveStatic } from '../src/trust/static-server.ts';

const DAY = 86_400_000;
let dir: string;
let data: string;
let repo: Repository;
let blobs: BlobStore;
let mirror: string;
let srv: StaticServer;
let good: OfferedArtifact;
let snapshotV1: string; // a whole exported tree at an older state (for rollback)

async function addRelease(component: string, version: string, text: string): Promise<OfferedArtifact> {
  const b = await blobs.put(Readable.from([Buffer.from(text)]));
  await repo.addTargets(
    [
      {
        path: `${component}/${version}/payload.bin`,
        sha256: b.sha256,
        length: b.length,
        custom: { component, version },
      },
    ],
    Date.now(),
  );
  return { name: 'payload.bin', sha256: b.sha256, length: b.length };
}

/** A fresh device pinned to root v1, and a way to snapshot its trusted metadata. */
function device() {
  const d = mkdtempSync(join(dir, 'dev-'));
  const metadataDir = join(d, 'tuf');
  const pinnedRoot = readFileSync(join(repo.metadataDir, '1.root.json'));
  const state = () =>
    Object.fromEntries(
      readdirSync(metadataDir)
        .sort()
        .map((f) => [f, readFileSync(join(metadataDir, f), 'utf8')]),
    );
  const verify = (component: string, version: string, artifacts: OfferedArtifact[], extra = {}) =>
    verifyRelease({ metadataDir, pinnedRoot, source: srv.url, component, version, artifacts, ...extra });
  return { d, metadataDir, state, verify };
}

/** Restores the honest mirror after an attack edited it. */
async function resetMirror() {
  rmSync(mirror, { recursive: true, force: true });
  await exportTree(repo, blobs, mirror);
}

function refused(r: VerifyResult, cls: string, re: RegExp) {
  assert.equal(r.ok, false, `expected a refusal, got ${JSON.stringify(r)}`);
  if (r.ok) return;
  assert.equal(r.class, cls, r.reason);
  assert.match(r.reason, re);
  if (process.env.RF_SHOW_REASONS) console.log(`refused [${r.class}] ${r.reason}`);
}

function signTimestamp(opts: { expires: number; key?: ReturnType<typeof generateKey> }) {
  const cur = Metadata.fromJSON(
    MetadataKind.Timestamp,
    JSON.parse(readFileSync(join(mirror, 'timestamp.json'), 'utf8')),
  );
  const ts = new Metadata(
    new Timestamp({
      version: cur.signed.version + 1,
      specVersion: cur.signed.specVersion,
      expires: tufExpires(opts.expires),
      snapshotMeta: cur.signed.snapshotMeta,
    }),
  );
  ts.sign(signerOf(opts.key ?? readRoleKeys(repo.keyDir, 'timestamp')[0]));
  writeFileSync(join(mirror, 'timestamp.json'), JSON.stringify(ts.toJSON()));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-attack-'));
  data = join(dir, 'data');
  repo = Repository.init(data, { rootKeys: 3, rootThreshold: 2 }).repo;
  blobs = new BlobStore(join(data, 'blobs'));
  good = await addRelease('app', '1.0.0', 'good release one');
  snapshotV1 = join(dir, 'old-tree');
  await exportTree(repo, blobs, snapshotV1);
  await addRelease('app', '1.1.0', 'good release two');
  mirror = join(dir, 'mirror');
  await exportTree(repo, blobs, mirror);
  srv = await serveStatic(mirror);
});
after(async () => {
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

test('baseline: an approved release verifies and downloads from a plain mirror; metadata cached', async () => {
  const dev = device();
  const r = await dev.verify('app', '1.0.0', [good], { downloadDir: join(dev.d, 'stage') });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(readFileSync(join(dev.d, 'stage', 'payload.bin'), 'utf8'), 'good release one');
  assert.deepEqual(Object.keys(dev.state()), [
    'root.json',
    'snapshot.json',
    'targets.json',
    'timestamp.json',
  ]);
  // Offline: the same check from a folder (an unpacked bundle or USB stick), no HTTP at all.
  const off = await verifyRelease({
    metadataDir: join(dev.d, 'tuf2'),
    pinnedRoot: join(repo.metadataDir, '1.root.json'),
    source: mirror,
    component: 'app',
    version: '1.0.0',
    artifacts: [good],
    downloadDir: join(dev.d, 'stage2'),
  });
  assert.equal(off.ok, true, JSON.stringify(off));
});

test('arbitrary installation: a release the organisation never signed is refused', async () => {
  const dev = device();
  const evil = { name: 'payload.bin', sha256: 'a'.repeat(64), length: 10 };
  refused(await dev.verify('app', '6.6.6', [evil]), 'unapproved', /not in the organisation's signed targets/);
  // A listed path offered with other content is refused too.
  refused(await dev.verify('app', '1.0.0', [{ ...good, sha256: 'b'.repeat(64) }]), 'mismatch', /signed/);
});

test('rollback: after seeing the new state, an older (validly signed) timestamp/snapshot is refused', async () => {
  const dev = device();
  assert.equal((await dev.verify('app', '1.0.0', [good])).ok, true);
  const trusted = dev.state();
  const old = await serveStatic(snapshotV1);
  try {
    const r = await verifyRelease({
      metadataDir: dev.metadataDir,
      source: old.url,
      component: 'app',
      version: '1.0.0',
      artifacts: [good],
    });
    refused(r, 'rollback', /version/);
  } finally {
    await old.close();
  }
  assert.deepEqual(dev.state(), trusted, 'trusted metadata unchanged');
});

test('indefinite freeze: a correctly signed but expired timestamp is refused', async () => {
  const dev = device();
  try {
    signTimestamp({ expires: Date.now() - DAY });
    refused(await dev.verify('app', '1.0.0', [good]), 'expired', /expired/);
  } finally {
    await resetMirror();
  }
});

test('mix-and-match: a snapshot from another state under the current name is refused', async () => {
  const dev = device();
  const ts = JSON.parse(readFileSync(join(mirror, 'timestamp.json'), 'utf8'));
  const v = ts.signed.meta['snapshot.json'].version;
  try {
    // The old, validly signed snapshot (it lists an older targets version) served as the current one.
    writeFileSync(
      join(mirror, `${v}.snapshot.json`),
      readFileSync(join(snapshotV1, `${v - 1}.snapshot.json`)),
    );
    const r = await dev.verify('app', '1.0.0', [good]);
    assert.equal(r.ok, false);
    refused(r, 'tampered', /snapshot/i);
  } finally {
    await resetMirror();
  }
});

test('endless data: an oversized timestamp is cut off and refused', async () => {
  const dev = device();
  try {
    writeFileSync(join(mirror, 'timestamp.json'), Buffer.alloc(5 * 1024 * 1024, 0x20));
    refused(await dev.verify('app', '1.0.0', [good]), 'oversized', /endless data/);
  } finally {
    await resetMirror();
  }
});

test('wrong signing key: a timestamp signed by a key the root does not trust is refused', async () => {
  const dev = device();
  try {
    signTimestamp({ expires: Date.now() + DAY, key: generateKey('timestamp') });
    refused(await dev.verify('app', '1.0.0', [good]), 'signature', /signature|signed/);
  } finally {
    await resetMirror();
  }
});

test('threshold not met: a new root signed by 1 of the 2 required root keys is refused; 2 of 3 is followed', async () => {
  const dev = device();
  const rootKeys = [1, 2, 3].map((i) => readKeyFile(join(repo.keyDir, `root-${i}.json`)));
  const v1 = Metadata.fromJSON(
    MetadataKind.Root,
    JSON.parse(readFileSync(join(mirror, '1.root.json'), 'utf8')),
  );
  const forged = Metadata.fromJSON(MetadataKind.Root, {
    ...v1.toJSON(),
    signed: { ...(v1.toJSON().signed as object), version: 2 },
    signatures: [],
  } as never);
  forged.sign(signerOf(rootKeys[0]));
  try {
    writeFileSync(join(mirror, '2.root.json'), JSON.stringify(forged.toJSON()));
    refused(await dev.verify('app', '1.0.0', [good]), 'signature', /root/);
  } finally {
    rmSync(join(mirror, '2.root.json'));
  }
  // The real rotation 1 -> 2 (two old keys sign; key 3 revoked; new online timestamp key) is followed.
  const newKey = generateKey('root');
  await repo.rotateRoot({
    oldRootKeys: rootKeys.slice(0, 2),
    newRootKeys: [rootKeys[0], rootKeys[1], newKey],
    threshold: 2,
    rotateOnline: ['timestamp'],
  });
  await resetMirror();
  const r = await dev.verify('app', '1.0.0', [good]);
  assert.equal(r.ok, true, JSON.stringify(r));
  if (r.ok) assert.equal(r.versions.root, 2);
});

test('blob tampered at the mirror: the download fails its signed hash and nothing is staged', async () => {
  const dev = device();
  const t = repo.targets().signed.targets['app/1.0.0/payload.bin'];
  const file = join(mirror, 'targets', hashedTargetPath('app/1.0.0/payload.bin', t.hashes.sha256));
  try {
    writeFileSync(file, 'GOOD release one'); // same length, one byte flipped in meaning
    const r = await dev.verify('app', '1.0.0', [good], { downloadDir: join(dev.d, 'stage') });
    refused(r, 'tampered', /hash|length/);
    assert.deepEqual(Object.keys(dev.state()), ['root.json'], 'no metadata committed on refusal');
  } finally {
    await resetMirror();
  }
});

test('interrupted verification leaves the trusted metadata intact (no work folders left behind)', async () => {
  const dev = device();
  assert.equal((await dev.verify('app', '1.0.0', [good])).ok, true);
  const leftovers = readdirSync(dev.d).filter((f) => f.includes('.work-'));
  assert.deepEqual(leftovers, []);
});
