// Shared TUF attack setups: each attack edits a static mirror tree (what any compromised mirror or man in the
// middle can serve) using real, validly made ed25519 signatures where the attack calls for them. Used by the
// verifier tests (trust-attacks) and by the tests against a real agent process (trust-agent).
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Metadata, MetadataKind, Timestamp } from '@tufjs/models';
import type { BlobStore } from '../src/server/blobs.ts';
import { exportTree, hashedTargetPath } from '../src/trust/ops/export.ts';
import { generateKey, readKeyFile, readRoleKeys, signerOf } from '../src/trust/signer/keys.ts';
import { type TufRepository, tufExpires } from '../src/trust/signer/tuf-repository.ts';
import type { VerifyResult } from '../src/trust/verifier/device-verifier.ts';

export const DAY = 86_400_000;

export interface AttackContext {
  repo: TufRepository;
  blobs: BlobStore;
  /** The mirror folder devices fetch from. */
  mirror: string;
  /** An older, validly signed export of the same repository (for rollback and mix-and-match). */
  oldTree: string;
  /** A target path (`component/version/name`) present in the current targets, for blob tampering. */
  targetPath: string;
}

/** Restores the honest mirror after an attack edited it. */
export async function resetMirror(ctx: Pick<AttackContext, 'repo' | 'blobs' | 'mirror'>): Promise<void> {
  rmSync(ctx.mirror, { recursive: true, force: true });
  await exportTree(ctx.repo, ctx.blobs, ctx.mirror);
}

/** A new timestamp over the mirror's current snapshot, signed by the real timestamp key or another one. */
export function signTimestamp(
  ctx: Pick<AttackContext, 'repo' | 'mirror'>,
  opts: { expires: number; key?: ReturnType<typeof generateKey> },
): void {
  const cur = Metadata.fromJSON(
    MetadataKind.Timestamp,
    JSON.parse(readFileSync(join(ctx.mirror, 'timestamp.json'), 'utf8')),
  );
  const ts = new Metadata(
    new Timestamp({
      version: cur.signed.version + 1,
      specVersion: cur.signed.specVersion,
      expires: tufExpires(opts.expires),
      snapshotMeta: cur.signed.snapshotMeta,
    }),
  );
  ts.sign(signerOf(opts.key ?? readRoleKeys(ctx.repo.keyDir, 'timestamp')[0]));
  writeFileSync(join(ctx.mirror, 'timestamp.json'), JSON.stringify(ts.toJSON()));
}

/** Root v(N+1) identical to v1 but signed by the single root key `root-1` (needs a threshold above 1). */
export function forgeRootWithOneKey(ctx: Pick<AttackContext, 'repo' | 'mirror'>): void {
  const cur = JSON.parse(readFileSync(join(ctx.mirror, 'root.json'), 'utf8'));
  const forged = Metadata.fromJSON(MetadataKind.Root, {
    ...cur,
    signed: { ...cur.signed, version: cur.signed.version + 1 },
    signatures: [],
  } as never);
  forged.sign(signerOf(readKeyFile(join(ctx.repo.keyDir, 'root-1.json'))));
  writeFileSync(join(ctx.mirror, `${cur.signed.version + 1}.root.json`), JSON.stringify(forged.toJSON()));
}

export interface Attack {
  name: string;
  /** The refusal class the device must give, and a pattern its reason must match. */
  class: string;
  reason: RegExp;
  /** Performs the attack on the mirror (resetMirror undoes it). */
  run(ctx: AttackContext): void;
}

/** The TUF attacks that are pure mirror edits, shared by the verifier and real-agent tests. */
export const MIRROR_ATTACKS: Attack[] = [
  {
    name: 'rollback: an older, validly signed tree is served after the device saw a newer one',
    class: 'rollback',
    reason: /version/,
    run(ctx) {
      rmSync(ctx.mirror, { recursive: true, force: true });
      cpSync(ctx.oldTree, ctx.mirror, { recursive: true });
    },
  },
  {
    name: 'indefinite freeze: a correctly signed but expired timestamp',
    class: 'expired',
    reason: /expired/,
    run: (ctx) => signTimestamp(ctx, { expires: Date.now() - DAY }),
  },
  {
    name: 'mix-and-match: an older, validly signed snapshot under the current name',
    class: 'tampered',
    reason: /snapshot/i,
    run(ctx) {
      const ts = JSON.parse(readFileSync(join(ctx.mirror, 'timestamp.json'), 'utf8'));
      const v = ts.signed.meta['snapshot.json'].version as number;
      const oldTs = JSON.parse(readFileSync(join(ctx.oldTree, 'timestamp.json'), 'utf8'));
      const oldV = oldTs.signed.meta['snapshot.json'].version as number;
      assert.ok(oldV < v, 'the old tree must hold an older snapshot');
      writeFileSync(
        join(ctx.mirror, `${v}.snapshot.json`),
        readFileSync(join(ctx.oldTree, `${oldV}.snapshot.json`)),
      );
    },
  },
  {
    name: 'endless data: a 5 MB timestamp',
    class: 'oversized',
    reason: /endless data/,
    run: (ctx) => writeFileSync(join(ctx.mirror, 'timestamp.json'), Buffer.alloc(5 * 1024 * 1024, 0x20)),
  },
  {
    name: 'wrong signing key: a timestamp signed by a key the root does not list',
    class: 'signature',
    reason: /signature|signed/,
    run: (ctx) => signTimestamp(ctx, { expires: Date.now() + DAY, key: generateKey('timestamp') }),
  },
  {
    name: 'threshold not met: a new root signed by 1 of the 2 required root keys',
    class: 'signature',
    reason: /root/,
    run: (ctx) => forgeRootWithOneKey(ctx),
  },
  {
    name: 'blob tampered at the mirror: same length, different bytes',
    class: 'tampered',
    reason: /hash|length/,
    run(ctx) {
      const t = ctx.repo.targets().signed.targets[ctx.targetPath];
      const file = join(ctx.mirror, 'targets', hashedTargetPath(ctx.targetPath, t.hashes.sha256));
      const bytes = readFileSync(file);
      bytes[0] ^= 0x20; // one byte flipped, length unchanged
      writeFileSync(file, bytes);
    },
  },
];

export function attack(name: string): Attack {
  const a = MIRROR_ATTACKS.find((x) => x.name.startsWith(name));
  if (!a) throw new Error(`no attack ${name}`);
  return a;
}

export function refused(r: VerifyResult, cls: string, re: RegExp): void {
  assert.equal(r.ok, false, `expected a refusal, got ${JSON.stringify(r)}`);
  if (r.ok) return;
  assert.equal(r.class, cls, r.reason);
  assert.match(r.reason, re);
  if (process.env.RF_SHOW_REASONS) console.log(`refused [${r.class}] ${r.reason}`);
}
