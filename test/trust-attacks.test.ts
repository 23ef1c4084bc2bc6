// TUF attacks against the device verifier: real ed25519 signatures, a real static HTTP mirror on loopback,
// the real tuf-js client. Every attack must be refused with a clear reason and leave the device's trusted
// metadata exactly as it was (the device stays on its last good state).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { BlobStore } from '../src/server/blobs.ts';
import { exportTree } from '../src/trust/ops/export.ts';
import { type StaticServer, serveStatic } from '../src/trust/ops/static-server.ts';
import { generateKey, readKeyFile } from '../src/trust/signer/keys.ts';
import { TufRepository } from '../src/trust/signer/tuf-repository.ts';
import { type OfferedArtifact, verifyRelease } from '../src/trust/verifier/device-verifier.ts';
import { type AttackContext, attack, forgeRootWithOneKey, refused, resetMirror } from './trust-harness.ts';

let dir: string;
let data: string;
let repo: TufRepository;
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

let ctx: AttackContext;

/** Runs a shared mirror attack against a fresh device, then restores the honest mirror. */
async function underAttack(name: string, extra = {}) {
  const dev = device();
  const at = attack(name);
  try {
    at.run(ctx);
    const r = await dev.verify('app', '1.0.0', [good], extra);
    refused(r, at.class, at.reason);
    return dev;
  } finally {
    await resetMirror(ctx);
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-attack-'));
  data = join(dir, 'data');
  repo = TufRepository.init(data, { rootKeys: 3, rootThreshold: 2 }).repo;
  blobs = new BlobStore(join(data, 'blobs'));
  good = await addRelease('app', '1.0.0', 'good release one');
  snapshotV1 = join(dir, 'old-tree');
  await exportTree(repo, blobs, snapshotV1);
  await addRelease('app', '1.1.0', 'good release two');
  mirror = join(dir, 'mirror');
  await exportTree(repo, blobs, mirror);
  srv = await serveStatic(mirror);
  ctx = { repo, blobs, mirror, oldTree: snapshotV1, targetPath: 'app/1.0.0/payload.bin' };
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
  await underAttack('indefinite freeze');
});

test('mix-and-match: a snapshot from another state under the current name is refused', async () => {
  await underAttack('mix-and-match');
});

test('endless data: an oversized timestamp is cut off and refused', async () => {
  await underAttack('endless data');
});

test('wrong signing key: a timestamp signed by a key the root does not trust is refused', async () => {
  await underAttack('wrong signing key');
});

test('threshold not met: a new root signed by 1 of the 2 required root keys is refused; 2 of 3 is followed', async () => {
  const dev = device();
  const rootKeys = [1, 2, 3].map((i) => readKeyFile(join(repo.keyDir, `root-${i}.json`)));
  try {
    forgeRootWithOneKey(ctx);
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
  await resetMirror(ctx);
  const r = await dev.verify('app', '1.0.0', [good]);
  assert.equal(r.ok, true, JSON.stringify(r));
  if (r.ok) assert.equal(r.versions.root, 2);
});

test('blob tampered at the mirror: the download fails its signed hash and nothing is staged', async () => {
  const dev = await underAttack('blob tampered', {
    downloadDir: join(mkdtempSync(join(dir, 'st-')), 'stage'),
  });
  assert.deepEqual(Object.keys(dev.state()), ['root.json'], 'no metadata committed on refusal');
});

test('interrupted verification leaves the trusted metadata intact (no work folders left behind)', async () => {
  const dev = device();
  assert.equal((await dev.verify('app', '1.0.0', [good])).ok, true);
  const leftovers = readdirSync(dev.d).filter((f) => f.includes('.work-'));
  assert.deepEqual(leftovers, []);
});
