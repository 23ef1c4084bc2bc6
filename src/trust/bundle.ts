// Offline bundles: one file with the signed TUF metadata, the target blobs of chosen releases, a manifest
// with checksums and, written last, a completion marker carrying the sha256 of everything before it.
//
// Container (simple, streamable, no dependencies):
//   "RFBUNDLE 1\n"
//   per entry:  <JSON header {"name","length","sha256"}>"\n" <length raw bytes>
//   last entry: MANIFEST.json (every other entry's name, length, sha256; releases; created; expires)
//   "RFBUNDLE-END <sha256 of all preceding bytes>\n"        <- the completion marker
// A bundle is written to FILE.partial and renamed, so a half-written one never has the final name; an
// import refuses anything without an intact marker, and verifies all of it (checksums, then TUF with the
// organisation's pinned root) in a scratch folder before a single blob or release becomes visible.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Metadata, MetadataKind } from '@tufjs/models';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import { badMode } from '../protocol/names.ts';
import type { BlobStore } from '../server/blobs.ts';
import { verifyRelease } from './device-verifier.ts';
import { exportTree } from './export.ts';
import type { Repository } from './repository.ts';
import {
  commitVendorMetadata,
  FileJournal,
  planVendorMetadata,
  TufSetError,
  type TufSetResult,
  VENDOR_FILE,
  VENDOR_NAME,
  type VendorPlan,
  vendorDir,
  vendorSets,
  verifyTufSet,
} from './vendor-store.ts';

const MAGIC = 'RFBUNDLE 1\n';
const END = 'RFBUNDLE-END ';
const MAX_HEADER = 4096;

export interface BundleRelease {
  component: string;
  version: string;
  /** `mode`: the file mode signed in the target's `custom.mode` (absent for releases signed without one). */
  artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
}

export interface BundleManifest {
  format: 'ringfence-bundle/1';
  created: string;
  expires: string;
  releases: BundleRelease[];
  entries: Array<{ name: string; length: number; sha256: string }>;
}

/** Releases listed in the signed targets (from their custom fields), optionally only the given NAME@V refs. */
export function signedReleases(repo: Repository, refs: string[] = []): BundleRelease[] {
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

/** Writes a bundle; returns its manifest. */
export async function exportBundle(
  repo: Repository,
  blobs: BlobStore,
  file: string,
  opts: { refs?: string[]; validForMs?: number; now?: number } = {},
): Promise<BundleManifest & { bytes: number }> {
  const releases = signedReleases(repo, opts.refs);
  const wanted = new Set(
    releases.flatMap((r) => r.artifacts.map((a) => `${r.component}/${r.version}/${a.name}`)),
  );
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
    const fd = openSync(partial, 'w', 0o644);
    const total = createHash('sha256');
    const put = (b: Buffer) => {
      total.update(b);
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    };
    const entries: BundleManifest['entries'] = [];
    try {
      put(Buffer.from(MAGIC));
      const entry = async (
        name: string,
        length: number,
        body: () => AsyncIterable<Buffer>,
        sha256: string,
      ) => {
        put(Buffer.from(`${JSON.stringify({ name, length, sha256 })}\n`));
        for await (const c of body()) put(c);
      };
      for (const n of names) {
        const path = join(stage, n);
        const h = createHash('sha256');
        for await (const c of createReadStream(path)) h.update(c as Buffer);
        const e = { name: n, length: statSync(path).size, sha256: h.digest('hex') };
        entries.push(e);
        await entry(n, e.length, () => createReadStream(path) as AsyncIterable<Buffer>, e.sha256);
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
      const marker = Buffer.from(`${END}${digest}\n`);
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

/** Unpacks and checks the container: magic, every entry's length and sha256, the manifest, the end marker. */
export function unpack(file: string, into: string): BundleManifest {
  const fd = openSync(file, 'r');
  const total = createHash('sha256');
  const size = statSync(file).size;
  let pos = 0;
  const buf = Buffer.alloc(1 << 20);
  const readLine = (): string => {
    const b = Buffer.alloc(MAX_HEADER);
    const n = readSync(fd, b, 0, MAX_HEADER, pos);
    const i = b.subarray(0, n).indexOf(0x0a);
    if (i < 0) throw new Error('bundle is truncated or corrupt (no header line)');
    return b.subarray(0, i + 1).toString('utf8');
  };
  try {
    const magic = readLine();
    if (magic !== MAGIC) throw new Error('not a Ringfence bundle');
    total.update(magic);
    pos += magic.length;
    const seen: BundleManifest['entries'] = [];
    let manifest: BundleManifest | null = null;
    for (;;) {
      if (pos >= size) throw new Error('bundle is incomplete: no completion marker (interrupted copy?)');
      const line = readLine();
      if (line.startsWith(END)) {
        const want = line.slice(END.length).trim();
        if (pos + Buffer.byteLength(line) !== size)
          throw new Error('bundle has bytes after its completion marker');
        if (total.digest('hex') !== want)
          throw new Error('bundle checksum does not match its completion marker');
        break;
      }
      const h = JSON.parse(line) as { name: string; length: number; sha256: string };
      if (
        typeof h.name !== 'string' ||
        h.name.startsWith('/') ||
        h.name.split('/').some((p) => p === '..' || p === '' || p === '.') ||
        !Number.isInteger(h.length) ||
        h.length < 0 ||
        pos + Buffer.byteLength(line) + h.length > size
      )
        throw new Error(`bundle entry "${String(h.name).slice(0, 80)}" is malformed or truncated`);
      total.update(line);
      pos += Buffer.byteLength(line);
      const out = join(into, h.name);
      mkdirSync(dirname(out), { recursive: true });
      const ofd = openSync(out, 'w');
      const eh = createHash('sha256');
      try {
        let left = h.length;
        while (left > 0) {
          const n = readSync(fd, buf, 0, Math.min(buf.length, left), pos);
          if (n <= 0) throw new Error('bundle is truncated');
          const chunk = buf.subarray(0, n);
          eh.update(chunk);
          total.update(chunk);
          writeSync(ofd, chunk);
          pos += n;
          left -= n;
        }
      } finally {
        closeSync(ofd);
      }
      if (eh.digest('hex') !== h.sha256) throw new Error(`bundle entry ${h.name} fails its checksum`);
      if (h.name === 'MANIFEST.json') manifest = JSON.parse(readFileSync(out, 'utf8'));
      else seen.push(h);
    }
    if (!manifest) throw new Error('bundle has no manifest');
    const listed = new Map(manifest.entries.map((e) => [e.name, e]));
    if (listed.size !== seen.length || seen.some((e) => listed.get(e.name)?.sha256 !== e.sha256))
      throw new Error('bundle entries do not match its manifest');
    return manifest;
  } finally {
    closeSync(fd);
  }
}

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
    const manifest = checkManifest(unpack(resolve(file), tree));
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
    try {
      for (const rel of manifest.releases)
        for (const a of rel.artifacts) {
          if (!blobs.has(a.sha256)) {
            await blobs.put(createReadStream(verifiedFile(rel, a.name)), { sha256: a.sha256 });
            created.push(a.sha256);
          }
          count++;
        }
      if (org?.newer)
        for (const w of org.writes) {
          // The current root under its plain name too (Repository.root()), before the commit point.
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
