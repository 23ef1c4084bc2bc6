// Writing an offline bundle: one file with the signed TUF metadata, the target blobs of chosen releases, a
// manifest with checksums and, written last, a completion marker carrying the sha256 of everything before it (the
// container format and its reader: verifier/bundle-reader.ts). A bundle is written to FILE.partial and renamed,
// so a half-written one never has the final name.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { badMode } from '../../protocol/names.ts';
import type { BlobStore } from '../../server/blobs.ts';
import type { ProgressUpdate } from '../../terminal/progress.ts';
import type { TufRepository } from '../signer/tuf-repository.ts';
import { vendorDir, vendorSets } from '../signer/vendor-store.ts';
import {
  BUNDLE_END,
  BUNDLE_MAGIC,
  type BundleManifest,
  type BundleRelease,
  unpack,
} from '../verifier/bundle-reader.ts';
import { exportTree } from './export.ts';

/** Releases listed in the signed targets (from their custom fields), optionally only the given NAME@V refs. */
export function signedReleases(repo: TufRepository, refs: string[] = []): BundleRelease[] {
  const byRef = new Map<string, BundleRelease>();
  for (const t of Object.values(repo.targets().signed.targets)) {
    const c = t.custom as { component?: string; version?: string; name?: string; mode?: unknown };
    if (!c.component || !c.version || !c.name) continue;
    const ref = `${c.component}@${c.version}`;
    const rel = byRef.get(ref) ?? { component: c.component, version: c.version, artifacts: [] };
    // Same key order as the server stores a release's artifacts (bundle import compares them as JSON).
    rel.artifacts.push({
      name: c.name,
      sha256: t.hashes.sha256,
      length: t.length,
      ...(badMode(c.mode, c.name) === null ? { mode: c.mode as number } : {}),
    });
    byRef.set(ref, rel);
  }
  if (refs.length === 0) return [...byRef.values()];
  return refs.map((r) => {
    const rel = byRef.get(r);
    if (!rel) throw new Error(`${r} is not an approved (signed) release`);
    return rel;
  });
}

export interface ExportOptions {
  refs?: string[];
  validForMs?: number;
  now?: number;
  /** Called as the work goes on (collecting the files, then writing them into the bundle); for a display. */
  onProgress?: (p: ProgressUpdate) => void;
}

/** Writes a bundle; returns its manifest. */
export async function exportBundle(
  repo: TufRepository,
  blobs: BlobStore,
  file: string,
  opts: ExportOptions = {},
): Promise<BundleManifest & { bytes: number }> {
  const releases = signedReleases(repo, opts.refs);
  const wanted = new Set(
    releases.flatMap((r) => r.artifacts.map((a) => `${r.component}/${r.version}/${a.name}`)),
  );
  const progress = opts.onProgress;
  progress?.({
    phase: 'collecting',
    bytes: 0,
    totalBytes: releases.reduce((n, r) => n + r.artifacts.reduce((m, a) => m + a.length, 0), 0),
    files: 0,
    totalFiles: wanted.size,
  });
  const stage = `${resolve(file)}.stage-${randomBytes(4).toString('hex')}`;
  const partial = `${resolve(file)}.partial`;
  try {
    const tree = await exportTree(repo, blobs, stage, {
      now: opts.now,
      validForMs: opts.validForMs,
      only: (p) => wanted.has(p),
    });
    if (tree.missing.length) throw new Error(`blobs missing for ${tree.missing.join(', ')}`);
    // Dual control: the vendors' metadata as the server holds it (DATA/vendor-tuf/<vendor>/), so devices with a
    // vendor pinned can check it offline too. The repository lives in DATA/tuf.
    const dataDir = dirname(repo.dir);
    for (const set of vendorSets(dataDir)) {
      mkdirSync(join(stage, 'vendor-tuf', set.vendor), { recursive: true });
      for (const f of set.files)
        writeFileAtomicSync(
          join(stage, 'vendor-tuf', set.vendor, f),
          readFileSync(join(vendorDir(dataDir, set.vendor), f)),
        );
    }
    const names: string[] = [];
    const walk = (d: string, pre: string) => {
      for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        if (e.isDirectory()) walk(join(d, e.name), `${pre}${e.name}/`);
        else names.push(`${pre}${e.name}`);
      }
    };
    walk(stage, '');
    // Metadata first is not required (import verifies everything before use), but timestamp.json last keeps
    // the stream in the same order a mirror update uses.
    names.sort((a, b) => Number(a === 'timestamp.json') - Number(b === 'timestamp.json'));
    // Bytes of the entries' bodies: what the progress counts (headers and the manifest are small).
    const sizes = names.map((n) => statSync(join(stage, n)).size);
    const done = { phase: 'writing', bytes: 0, totalBytes: sizes.reduce((a, b) => a + b, 0), files: 0 };
    const totalFiles = names.length;
    const fd = openSync(partial, 'w', 0o644);
    const total = createHash('sha256');
    const put = (b: Buffer) => {
      total.update(b);
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    };
    const entries: BundleManifest['entries'] = [];
    try {
      put(Buffer.from(BUNDLE_MAGIC));
      const entry = async (
        name: string,
        length: number,
        body: () => AsyncIterable<Buffer>,
        sha256: string,
      ) => {
        put(Buffer.from(`${JSON.stringify({ name, length, sha256 })}\n`));
        for await (const c of body()) put(c);
      };
      async function* counted(path: string): AsyncIterable<Buffer> {
        for await (const c of createReadStream(path) as AsyncIterable<Buffer>) {
          yield c;
          done.bytes += c.length;
          progress?.({ ...done, totalFiles });
        }
      }
      for (const [i, n] of names.entries()) {
        const path = join(stage, n);
        const h = createHash('sha256');
        for await (const c of createReadStream(path)) h.update(c as Buffer);
        const e = { name: n, length: sizes[i], sha256: h.digest('hex') };
        entries.push(e);
        await entry(n, e.length, () => counted(path), e.sha256);
        done.files++;
        progress?.({ ...done, totalFiles });
      }
      const manifest: BundleManifest = {
        format: 'ringfence-bundle/1',
        created: new Date(opts.now ?? Date.now()).toISOString(),
        expires: tree.expires,
        releases,
        entries,
      };
      const mbytes = Buffer.from(JSON.stringify(manifest, null, 2));
      const msha = createHash('sha256').update(mbytes).digest('hex');
      await entry(
        'MANIFEST.json',
        mbytes.length,
        async function* () {
          yield mbytes;
        },
        msha,
      );
      // The completion marker, last: its hash covers every byte before it.
      const digest = total.digest('hex');
      const marker = Buffer.from(`${BUNDLE_END}${digest}\n`);
      let off = 0;
      while (off < marker.length) off += writeSync(fd, marker, off, marker.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(partial, resolve(file));
    const manifest = JSON.parse((await readBundleManifestOnly(resolve(file))) ?? '{}') as BundleManifest;
    return { ...manifest, bytes: statSync(resolve(file)).size };
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(partial, { force: true });
  }
}

async function readBundleManifestOnly(file: string): Promise<string | null> {
  const dir = `${file}.peek-${randomBytes(4).toString('hex')}`;
  try {
    unpack(file, dir);
    return readFileSync(join(dir, 'MANIFEST.json'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
