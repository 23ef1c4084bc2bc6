// Dual control (Uptane style), the import side: the vendor publishes its own TUF repository, signed with its own
// keys. At import the CLI checks every file against it (the vendor's pinned root, tuf-js) and keeps the vendor's
// metadata files exactly as signed, for the server to publish at /v1/vendor-tuf/<vendor>/. The device's own
// check is verifier/vendor-tuf.ts.
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { Updater } from 'tuf-js';
import { classify, toUrl } from '../verifier/device-verifier.ts';
import { MirrorFetcher } from '../verifier/fetcher.ts';
import { DEFAULT_VENDOR_PREFIX, vendorPath } from '../verifier/vendor-tuf.ts';
import { TufSetError, verifyTufSet } from './tuf-set.ts';
import { VendorVerificationError } from './vendor.ts';
import { VENDOR_FILE, VENDOR_NAME } from './vendor-store.ts';

export interface VendorTufProvenance {
  vendor: string;
  /** Key ids of the vendor's root role in the newest root verified at import. */
  vendor_root_keyids: string[];
  vendor_root_version: number;
  vendor_timestamp_version: number;
  targets: Array<{ name: string; path: string; sha256: string; length: number }>;
}

/** Keeps the bytes of every metadata file fetched, under the name it was fetched by. */
class RecordingFetcher extends MirrorFetcher {
  readonly recorded = new Map<string, Buffer>();
  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const chunks: Buffer[] = [];
    for await (const c of (await super.fetch(url)) as unknown as AsyncIterable<Uint8Array>)
      chunks.push(Buffer.from(c));
    const bytes = Buffer.concat(chunks);
    const name = basename(new URL(url).pathname);
    if (VENDOR_FILE.test(name)) this.recorded.set(name, bytes);
    return Readable.toWeb(Readable.from([bytes])) as ReadableStream<Uint8Array<ArrayBuffer>>;
  }
}

async function sha256File(path: string): Promise<{ sha256: string; length: number }> {
  const h = createHash('sha256');
  let length = 0;
  for await (const c of createReadStream(path)) {
    h.update(c as Buffer);
    length += (c as Buffer).length;
  }
  return { sha256: h.digest('hex'), length };
}

/**
 * Import-time check: every file must be in the vendor's signed targets at `prefix + name` with its exact sha256 and
 * length, verified by tuf-js from the vendor's pinned root. Throws VendorVerificationError with a one-line reason.
 * Returns the provenance, the vendor's metadata files exactly as fetched (every root version, timestamp, snapshot,
 * targets; the operator's root under its own version) for the server to verify again and publish, and the
 * operator's root (the server pins it on the vendor's first upload).
 */
export async function verifyVendorTuf(opts: {
  vendor: string;
  source: string;
  rootFile: string;
  component: string;
  version: string;
  files: Array<{ name: string; path: string }>;
  prefix?: string;
}): Promise<{ provenance: VendorTufProvenance; metadata: Record<string, Buffer>; root: Buffer }> {
  if (!VENDOR_NAME.test(opts.vendor)) throw new VendorVerificationError(`bad vendor name ${opts.vendor}`);
  const prefix = opts.prefix ?? DEFAULT_VENDOR_PREFIX;
  const work = mkdtempSync(join(tmpdir(), 'rf-vendor-tuf-'));
  try {
    let root: Buffer;
    try {
      root = readFileSync(opts.rootFile);
      JSON.parse(root.toString());
    } catch (e) {
      throw new VendorVerificationError(`cannot read vendor root ${opts.rootFile}: ${(e as Error).message}`);
    }
    writeFileSync(join(work, 'root.json'), root);
    const base = toUrl(opts.source);
    const fetcher = new RecordingFetcher({ timeoutMs: 60_000 });
    const updater = new Updater({
      metadataDir: work,
      metadataBaseUrl: base,
      targetBaseUrl: `${base}/targets`,
      fetcher,
    });
    const targets: VendorTufProvenance['targets'] = [];
    try {
      await updater.refresh();
      for (const f of opts.files) {
        const path = vendorPath(prefix, opts.component, opts.version, f.name);
        const info = await updater.getTargetInfo(path);
        // tuf-js looks targets up by plain indexing: `__proto__` or `constructor` would find Object's own members.
        if (!info || info.path !== path)
          throw new VendorVerificationError(`${path} is not in vendor ${opts.vendor}'s signed targets`);
        const h = await sha256File(f.path);
        if (info.hashes.sha256 !== h.sha256 || info.length !== h.length)
          throw new VendorVerificationError(
            `${f.name}: sha256 ${h.sha256.slice(0, 12)}…/${h.length} bytes, vendor ${opts.vendor} signed ${String(info.hashes.sha256).slice(0, 12)}…/${info.length} bytes at ${path}`,
          );
        targets.push({ name: f.name, path, ...h });
      }
    } catch (e) {
      if (e instanceof VendorVerificationError) throw e;
      const c = classify(e);
      throw new VendorVerificationError(`vendor ${opts.vendor} metadata [${c.class}]: ${c.reason}`);
    }
    const trusted = JSON.parse(readFileSync(join(work, 'root.json'), 'utf8'));
    const rootVersion = trusted.signed.version as number;
    // Devices may pin an older vendor root than the one given here: publish the whole chain.
    for (let v = 1; v <= rootVersion; v++) {
      if (fetcher.recorded.has(`${v}.root.json`)) continue;
      try {
        await fetcher.fetch(`${base}/${v}.root.json`);
      } catch {
        // not published by the vendor: devices pinned to that version cannot follow, nothing more to do
      }
    }
    if (!fetcher.recorded.has(`${rootVersion}.root.json`))
      fetcher.recorded.set(`${rootVersion}.root.json`, readFileSync(join(work, 'root.json')));
    // The operator's root is what the server pins (or must find in the chain it pinned): upload it as given, and
    // check the whole set exactly as the server will (the backfilled older roots were not verified by tuf-js).
    const given = JSON.parse(root.toString());
    const givenVersion = given?.signed?.version;
    if (Number.isSafeInteger(givenVersion)) fetcher.recorded.set(`${givenVersion}.root.json`, root);
    try {
      verifyTufSet({
        files: fetcher.recorded,
        anchor: root,
        trusted: () => null,
        now: Date.now(),
      });
    } catch (e) {
      if (e instanceof TufSetError)
        throw new VendorVerificationError(`vendor ${opts.vendor} metadata: ${e.message}`);
      throw e;
    }
    const ts = JSON.parse(readFileSync(join(work, 'timestamp.json'), 'utf8'));
    return {
      provenance: {
        vendor: opts.vendor,
        vendor_root_keyids: [...trusted.signed.roles.root.keyids].sort(),
        vendor_root_version: rootVersion,
        vendor_timestamp_version: ts.signed.version,
        targets,
      },
      metadata: Object.fromEntries(fetcher.recorded),
      root,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
