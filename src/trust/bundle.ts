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
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomicSync } from '../store/atomic-file.ts';
import type { BlobStore } from '../store/blobs.ts';
import { verifyRelease } from './device-verifier.ts';
import { exportTree, hashedTargetPath } from './export.ts';
import type { Repository } from './repository.ts';
import { storeVendorMetadata, vendorDir, vendorSets } from './vendor-store.ts';

const MAGIC = 'RFBUNDLE 1\n';
const END = 'RFBUNDLE-END ';
const MAX_HEADER = 4096;

export interface BundleRelease {
  component: string;
  version: string;
  artifacts: Array<{ name: string; sha256: string; length: number }>;
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
    const c = t.custom as { component?: string; version?: string; name?: string };
    if (!c.component || !c.version || !c.name) continue;
    const ref = `${c.component}@${c.version}`;
    const rel = byRef.get(ref) ?? { component: c.component, version: c.version, artifacts: [] };
    rel.artifacts.push({ name: c.name, sha256: t.hashes.sha256, length: t.length });
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
}

/**
 * Imports a bundle into a server data folder. Order: unpack + checksums, then TUF verification of every
 * release against the pinned root (the server's own 1.root.json, or `pinnedRoot`), then blobs, then
 * metadata (timestamp.json last), then the caller registers the releases (its database commit).
 */
export async function importBundle(
  file: string,
  dataDir: string,
  blobs: BlobStore,
  opts: { pinnedRoot?: string; precheck?: (releases: BundleRelease[]) => Promise<void> } = {},
): Promise<ImportResult> {
  const tufDir = join(dataDir, 'tuf');
  const metadataDir = join(tufDir, 'metadata');
  mkdirSync(tufDir, { recursive: true });
  const work = join(tufDir, `incoming-${randomBytes(4).toString('hex')}`);
  try {
    const tree = join(work, 'tree');
    const manifest = unpack(resolve(file), tree);
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
    if (
      existsSync(join(tufDir, 'keys')) &&
      existsSync(localRoot) &&
      !readFileSync(join(tree, '1.root.json')).equals(pinned)
    )
      throw new Error('bundle is signed under another organisation root than this server');
    let bytes = 0;
    for (const rel of manifest.releases) {
      const r = await verifyRelease({
        metadataDir: join(work, 'client'),
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
    await opts.precheck?.(manifest.releases);
    // Everything verified: blobs (content-addressed, each atomic), then metadata, timestamp last.
    let count = 0;
    for (const rel of manifest.releases)
      for (const a of rel.artifacts) {
        const src = join(
          tree,
          'targets',
          hashedTargetPath(`${rel.component}/${rel.version}/${a.name}`, a.sha256),
        );
        if (!blobs.has(a.sha256)) await blobs.put(createReadStream(src), { sha256: a.sha256 });
        count++;
      }
    const incomingTs = JSON.parse(readFileSync(join(tree, 'timestamp.json'), 'utf8')).signed
      .version as number;
    const localTs = existsSync(join(metadataDir, 'timestamp.json'))
      ? (JSON.parse(readFileSync(join(metadataDir, 'timestamp.json'), 'utf8')).signed.version as number)
      : 0;
    if (incomingTs > localTs && !existsSync(join(tufDir, 'keys'))) {
      // A server without its own keys mirrors the organisation's metadata as is.
      mkdirSync(metadataDir, { recursive: true });
      const names = readdirSync(tree)
        .filter((n) => n.endsWith('.json') && n !== 'MANIFEST.json')
        .sort((a, b) => Number(a === 'timestamp.json') - Number(b === 'timestamp.json'));
      for (const n of names) writeFileAtomicSync(join(metadataDir, n), readFileSync(join(tree, n)));
      const roots = names
        .filter((n) => /^\d+\.root\.json$/.test(n))
        .sort((a, b) => parseInt(b, 10) - parseInt(a, 10));
      if (roots[0]) writeFileAtomicSync(join(metadataDir, 'root.json'), readFileSync(join(tree, roots[0])));
    }
    // Vendor metadata travels as is (newest timestamp wins); devices verify it from the vendor roots they pin.
    const vendors = join(tree, 'vendor-tuf');
    if (existsSync(vendors))
      for (const v of readdirSync(vendors)) {
        const files = Object.fromEntries(
          readdirSync(join(vendors, v)).map((f) => [f, readFileSync(join(vendors, v, f))]),
        );
        storeVendorMetadata(dataDir, v, files);
      }
    return { releases: manifest.releases, blobs: count, bytes, timestamp_version: incomingTs };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
