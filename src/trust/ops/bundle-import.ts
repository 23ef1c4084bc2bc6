// Importing an offline bundle into a server: refuses anything without an intact completion marker, and verifies
// all of it (checksums, then TUF with the organisation's pinned root, vendors' metadata against their pinned roots)
// in a scratch folder before a single blob or release becomes visible. Writing bundles: bundle-export.ts.
import { randomBytes } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Metadata, MetadataKind } from '@tufjs/models';
import { badMode } from '../../protocol/names.ts';
import type { BlobStore } from '../../server/blobs.ts';
import type { ProgressUpdate } from '../../terminal/progress.ts';
import { TufSetError, type TufSetResult, verifyTufSet } from '../signer/tuf-set.ts';
import {
  commitVendorMetadata,
  FileJournal,
  planVendorMetadata,
  VENDOR_FILE,
  VENDOR_NAME,
  type VendorPlan,
} from '../signer/vendor-store.ts';
import { type BundleManifest, type BundleRelease, unpack } from '../verifier/bundle-reader.ts';
import { verifyRelease } from '../verifier/device-verifier.ts';

export interface ImportResult {
  releases: BundleRelease[];
  blobs: number;
  bytes: number;
  timestamp_version: number;
  /** What the caller's `register` (the database commit) reported as new. */
  added: string[];
  vendors: Array<{ vendor: string; stored: boolean; timestamp_version: number; pinned: boolean }>;
}

export interface ImportOptions {
  /** The organisation's root when this server has none yet (`--root`). */
  pinnedRoot?: string;
  /** Vendor name → root file, for vendors whose root this server has not pinned yet (`--vendor-root NAME=FILE`). */
  vendorRoots?: Record<string, string>;
  /** Leave the vendors' metadata the bundle carries out (e.g. expired on the way). */
  skipVendorTuf?: boolean;
  /** Checks that must pass before anything is written (the database dry run). */
  precheck?: (releases: BundleRelease[]) => Promise<void>;
  /** The commit point: registers the releases (one database transaction); returns what was new. */
  register?: (releases: BundleRelease[]) => Promise<string[]>;
  /** Whether another release references a blob; such a blob is kept when a refused import is undone. */
  isReferenced?: (sha256: string) => Promise<boolean>;
  /** Called as the work goes on (unpacking, verifying each release, storing the blobs); for a display. */
  onProgress?: (p: ProgressUpdate) => void;
  now?: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const ORG_FILE = /^([0-9]+\.)?(root|targets|snapshot|timestamp)\.json$/;

/** An artifact name is a relative path inside the release: no absolute path, no `..`, `.` or empty segment. */
function safeArtifactName(n: unknown): n is string {
  return (
    typeof n === 'string' &&
    n.length > 0 &&
    n.length <= 1024 &&
    !n.includes('\\') &&
    !n.includes('\0') &&
    !n.startsWith('/') &&
    n.split('/').every((p) => p !== '' && p !== '.' && p !== '..')
  );
}

/** The manifest is not signed: every field is checked before it is used for a path or a database row. */
function checkManifest(m: BundleManifest): BundleManifest {
  const bad = (why: string): never => {
    throw new Error(`bundle manifest: ${why}`);
  };
  if (!m || typeof m !== 'object' || m.format !== 'ringfence-bundle/1')
    bad('not a ringfence-bundle/1 manifest');
  if (!Array.isArray(m.releases)) bad('no list of releases');
  const refs = new Set<string>();
  for (const r of m.releases) {
    if (!r || typeof r !== 'object' || !NAME.test(String(r.component)) || !NAME.test(String(r.version)))
      bad(`bad release name ${JSON.stringify(r?.component)}@${JSON.stringify(r?.version)}`.slice(0, 200));
    const ref = `${r.component}@${r.version}`;
    if (refs.has(ref)) bad(`${ref} is listed twice`);
    refs.add(ref);
    if (!Array.isArray(r.artifacts) || r.artifacts.length === 0 || r.artifacts.length > 10_000)
      bad(`${ref} has no list of files`);
    const names = new Set<string>();
    for (const a of r.artifacts) {
      if (!a || !safeArtifactName(a.name))
        bad(`${ref} has a bad file name ${JSON.stringify(a?.name)}`.slice(0, 200));
      if (names.has(a.name)) bad(`${ref} lists ${a.name} twice`);
      names.add(a.name);
      if (typeof a.sha256 !== 'string' || !SHA256.test(a.sha256)) bad(`${ref}: ${a.name} has a bad sha256`);
      if (!Number.isSafeInteger(a.length) || a.length < 0) bad(`${ref}: ${a.name} has a bad length`);
      if (a.mode !== undefined && badMode(a.mode, a.name)) bad(`${ref}: ${a.name} has a bad mode`);
    }
  }
  return m;
}

/** The bundle's top-level TUF metadata files (the organisation's set). */
function orgMetadata(tree: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const e of readdirSync(tree, { withFileTypes: true }))
    if (e.isFile() && ORG_FILE.test(e.name)) out.set(e.name, readFileSync(join(tree, e.name)));
  return out;
}

const readIf = (f: string) => (existsSync(f) ? readFileSync(f) : null);

/**
 * Imports a bundle into a server data folder. Nothing becomes visible before everything verified:
 *   1. unpack into a scratch folder: magic, every entry's length and sha256, the manifest, the completion marker;
 *   2. the manifest's fields (names are paths), then every release with the TUF client against the pinned root
 *      (the server's own 1.root.json, or `pinnedRoot`), every blob against its signed hash, and each release
 *      complete (exactly the files the organisation signed for it);
 *   3. the organisation's metadata as a set (a server without keys mirrors it) and every vendor's metadata against
 *      the vendor root this server pinned (or `vendorRoots` the first time);
 *   4. the caller's `precheck` (the database dry run);
 * then blobs, metadata (timestamp.json last), vendor metadata, and the caller's `register` (the database commit).
 * When any of that fails, every file it wrote is removed or restored and the blobs it added that no release
 * references are deleted, so a refused import leaves nothing behind.
 */
export async function importBundle(
  file: string,
  dataDir: string,
  blobs: BlobStore,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  const now = opts.now ?? Date.now();
  const tufDir = join(dataDir, 'tuf');
  const metadataDir = join(tufDir, 'metadata');
  mkdirSync(dataDir, { recursive: true });
  const work = join(dataDir, `.bundle-incoming-${randomBytes(4).toString('hex')}`);
  try {
    const tree = join(work, 'tree');
    const progress = opts.onProgress;
    const size = progress && existsSync(file) ? statSync(file).size : 0;
    progress?.({ phase: 'unpacking', bytes: 0, totalBytes: size, files: 0, totalFiles: 0 });
    const manifest = checkManifest(unpack(resolve(file), tree));
    // What the progress counts: the releases' files, verified and then stored.
    const step = {
      phase: 'verifying',
      bytes: 0,
      totalBytes: manifest.releases.reduce((n, r) => n + r.artifacts.reduce((m, a) => m + a.length, 0), 0),
      files: 0,
      totalFiles: manifest.releases.reduce((n, r) => n + r.artifacts.length, 0),
    };
    progress?.(step);
    const localRoot = join(metadataDir, '1.root.json');
    const pinned = existsSync(localRoot)
      ? readFileSync(localRoot)
      : opts.pinnedRoot
        ? readFileSync(opts.pinnedRoot)
        : null;
    if (!pinned)
      throw new Error(
        'no pinned root: this server has no TUF root; pass --root FILE (the organisation root v1)',
      );
    const keyed = existsSync(join(tufDir, 'keys'));
    if (keyed && existsSync(localRoot) && !readIf(join(tree, '1.root.json'))?.equals(pinned))
      throw new Error('bundle is signed under another organisation root than this server');

    // Every release, with the TUF client, against the pinned root; the blobs are downloaded and hash-checked.
    const clientDir = join(work, 'client');
    const verifiedFile = (rel: BundleRelease, name: string) =>
      join(work, 'verified', rel.component, rel.version, name);
    let bytes = 0;
    for (const rel of manifest.releases) {
      const r = await verifyRelease({
        metadataDir: clientDir,
        pinnedRoot: pinned,
        source: tree,
        component: rel.component,
        version: rel.version,
        artifacts: rel.artifacts,
        downloadDir: join(work, 'verified', rel.component, rel.version),
      });
      if (!r.ok) throw new Error(`refused ${rel.component}@${rel.version}: ${r.reason}`);
      for (const a of rel.artifacts) bytes += a.length;
      if (progress) {
        step.bytes = bytes;
        step.files += rel.artifacts.length;
        progress({ ...step });
      }
    }
    // Each release complete: a bundle cannot register part of a release under its name.
    if (manifest.releases.length) {
      const signed = Metadata.fromJSON(
        MetadataKind.Targets,
        JSON.parse(readFileSync(join(clientDir, 'targets.json'), 'utf8')),
      ).signed.targets;
      for (const rel of manifest.releases) {
        const want = Object.values(signed)
          .map((t) => t.custom as { component?: unknown; version?: unknown; name?: unknown })
          .filter((c) => c.component === rel.component && c.version === rel.version)
          .map((c) => String(c.name))
          .sort();
        const got = rel.artifacts.map((a) => a.name).sort();
        if (want.join('\n') !== got.join('\n'))
          throw new Error(
            `refused ${rel.component}@${rel.version}: the bundle lists ${got.length} file(s), the organisation signed ${want.length} for it`,
          );
      }
    }

    // The organisation's metadata, for a server without its own keys (a mirror of the organisation's): verified as
    // a set when it is newer than what the mirror holds (an older bundle only brings its releases).
    const versionOf = (b: Buffer | null) => {
      try {
        const v = b ? JSON.parse(b.toString('utf8'))?.signed?.version : 0;
        return Number.isSafeInteger(v) ? (v as number) : 0;
      } catch {
        return 0;
      }
    };
    const incomingTs = versionOf(readIf(join(tree, 'timestamp.json')));
    let org: TufSetResult | null = null;
    if (!keyed && incomingTs > versionOf(readIf(join(metadataDir, 'timestamp.json')))) {
      const newest = readIf(join(metadataDir, 'root.json'));
      try {
        org = verifyTufSet({
          files: orgMetadata(tree),
          anchor: newest ?? pinned,
          trusted: newest ? (n) => readIf(join(metadataDir, n)) : () => null,
          now,
        });
      } catch (e) {
        if (e instanceof TufSetError) throw new Error(`organisation metadata refused: ${e.message}`);
        throw e;
      }
    }

    // The vendors' metadata, against the vendor roots this server pinned.
    const vendorPlans: VendorPlan[] = [];
    const vendorsDir = join(tree, 'vendor-tuf');
    if (existsSync(vendorsDir) && !opts.skipVendorTuf)
      for (const v of readdirSync(vendorsDir, { withFileTypes: true }).sort((a, b) =>
        a.name.localeCompare(b.name),
      )) {
        if (!v.isDirectory() || !VENDOR_NAME.test(v.name))
          throw new Error(`bundle entry vendor-tuf/${v.name.slice(0, 64)} is not a vendor folder`);
        const files = new Map<string, Buffer>();
        for (const f of readdirSync(join(vendorsDir, v.name), { withFileTypes: true })) {
          if (!f.isFile() || !VENDOR_FILE.test(f.name))
            throw new Error(`bundle entry vendor-tuf/${v.name}/${f.name.slice(0, 64)} is not TUF metadata`);
          files.set(f.name, readFileSync(join(vendorsDir, v.name, f.name)));
        }
        const rootFile =
          opts.vendorRoots && Object.hasOwn(opts.vendorRoots, v.name) ? opts.vendorRoots[v.name] : undefined;
        let root: Buffer | undefined;
        if (rootFile)
          try {
            root = readFileSync(rootFile);
          } catch (e) {
            throw new Error(`cannot read the root of vendor ${v.name}: ${(e as Error).message}`);
          }
        vendorPlans.push(
          planVendorMetadata(dataDir, v.name, files, {
            root,
            now,
            hint: `bundle import --vendor-root ${v.name}=FILE`,
          }),
        );
      }

    await opts.precheck?.(manifest.releases);

    // Everything verified. Writes from here on are journalled; the caller's register is the commit point.
    const journal = new FileJournal();
    const created: string[] = [];
    let count = 0;
    let added: string[] = [];
    Object.assign(step, { phase: 'storing', bytes: 0, files: 0 });
    try {
      for (const rel of manifest.releases)
        for (const a of rel.artifacts) {
          if (!blobs.has(a.sha256)) {
            await blobs.put(createReadStream(verifiedFile(rel, a.name)), { sha256: a.sha256 });
            created.push(a.sha256);
          }
          count++;
          if (progress) {
            step.bytes += a.length;
            step.files++;
            progress({ ...step });
          }
        }
      if (org?.newer)
        for (const w of org.writes) {
          // The current root under its plain name too (TufRepository.root()), before the commit point.
          if (w.name === 'timestamp.json' && !readIf(join(metadataDir, 'root.json'))?.equals(org.root.bytes))
            journal.write(join(metadataDir, 'root.json'), org.root.bytes);
          journal.write(join(metadataDir, w.name), w.bytes);
        }
      for (const plan of vendorPlans) commitVendorMetadata(plan, journal);
      added = (await opts.register?.(manifest.releases)) ?? [];
    } catch (e) {
      try {
        journal.undo();
      } catch {}
      for (const sha of created.reverse()) {
        let keep = true;
        try {
          keep = (await opts.isReferenced?.(sha)) ?? false;
        } catch {}
        if (keep) continue;
        rmSync(blobs.path(sha), { force: true });
        try {
          rmdirSync(dirname(blobs.path(sha))); // the fan-out folder, when empty
        } catch {}
      }
      throw e;
    }
    return {
      releases: manifest.releases,
      blobs: count,
      bytes,
      timestamp_version: incomingTs,
      added,
      vendors: vendorPlans.map((p) => ({
        vendor: p.vendor,
        stored: p.result.newer,
        timestamp_version: p.result.timestampVersion,
        pinned: p.firstPin,
      })),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
