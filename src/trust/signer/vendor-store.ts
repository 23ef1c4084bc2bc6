// The vendors' TUF metadata as kept by the server (DATA/vendor-tuf/<vendor>/): the files exactly as the vendor
// signed them, published at /v1/vendor-tuf/<vendor>/<name> and carried in offline bundles.
//
// Nothing is stored before it verifies (docs/trust.md, "Vendor root pinning on the server"). The server pins a
// vendor's root the first time that vendor's metadata is stored (the root the operator gave `release import
// --vendor-root`, or `bundle import --vendor-root NAME=FILE`), in DATA/vendor-tuf-pins/<vendor>.root.json; from then
// on every set must chain to it: a new root is accepted only when signed by a threshold of the pinned root's keys
// and of its own (TUF root rotation), and timestamp → snapshot → targets must be signed by the keys of the newest
// root, match the versions, lengths and hashes their parent signed, and not be expired. The checks are the TUF
// client workflow's, done with @tufjs/models (Metadata.fromJSON, verifyDelegate, MetaFile.verify): no crypto here.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MetadataKind } from '@tufjs/models';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { delegate, load, TufSetError, type TufSetResult, verifyTufSet } from './tuf-set.ts';

export { TufSetError } from './tuf-set.ts';

export const VENDOR_FILE = /^(\d+\.)?(root|timestamp|snapshot|targets)\.json$/;
export const VENDOR_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function vendorDir(dataDir: string, vendor: string): string {
  if (!VENDOR_NAME.test(vendor)) throw new Error(`bad vendor name ${vendor}`);
  return join(dataDir, 'vendor-tuf', vendor);
}

/** The vendor root this server trusts (the newest verified root version); outside the published folder. */
export function vendorPinFile(dataDir: string, vendor: string): string {
  if (!VENDOR_NAME.test(vendor)) throw new Error(`bad vendor name ${vendor}`);
  return join(dataDir, 'vendor-tuf-pins', `${vendor}.root.json`);
}

export function readVendorFile(dataDir: string, vendor: string, name: string): Buffer | null {
  if (!VENDOR_NAME.test(vendor) || !VENDOR_FILE.test(name)) return null;
  const f = join(vendorDir(dataDir, vendor), name);
  return existsSync(f) ? readFileSync(f) : null;
}

/** Records every file written or removed so that a refused import can put everything back as it was. */
export class FileJournal {
  private readonly undoLog: Array<{ path: string; before: Buffer | null } | { dir: string }> = [];

  private mkdir(dir: string): void {
    const first = mkdirSync(dir, { recursive: true });
    if (!first) return;
    // Every folder from `first` down to `dir` is new.
    const made: string[] = [];
    for (let d = dir; d.length >= first.length; d = dirname(d)) {
      made.push(d);
      if (d === first) break;
    }
    for (const d of made.reverse()) this.undoLog.push({ dir: d });
  }

  write(path: string, bytes: Buffer): void {
    this.mkdir(dirname(path));
    this.undoLog.push({ path, before: existsSync(path) ? readFileSync(path) : null });
    writeFileAtomicSync(path, bytes);
  }

  remove(path: string): void {
    if (!existsSync(path)) return;
    this.undoLog.push({ path, before: readFileSync(path) });
    rmSync(path, { force: true });
  }

  /** Undoes in reverse order (the last write, the commit point, first). */
  undo(): void {
    for (const e of this.undoLog.reverse()) {
      if ('dir' in e) {
        try {
          rmdirSync(e.dir); // only when empty
        } catch {}
      } else if (e.before) writeFileAtomicSync(e.path, e.before);
      else rmSync(e.path, { force: true });
    }
    this.undoLog.length = 0;
  }
}

export interface VendorPlan {
  vendor: string;
  dir: string;
  pinFile: string;
  /** True when this set pins the vendor's root for the first time. */
  firstPin: boolean;
  result: TufSetResult;
}

/**
 * Verifies a vendor's metadata set without writing anything. `root` is the vendor root the operator pinned for the
 * import (required the first time; afterwards it must belong to the pinned chain). `hint` says how to give a root.
 */
export function planVendorMetadata(
  dataDir: string,
  vendor: string,
  files: Map<string, Buffer> | Record<string, Buffer>,
  opts: { root?: Buffer; now: number; hint?: string },
): VendorPlan {
  const fail = (msg: string) => new TufSetError(`vendor ${vendor} metadata refused: ${msg}`);
  if (!VENDOR_NAME.test(vendor)) throw fail('bad vendor name');
  const set = new Map(files instanceof Map ? files : Object.entries(files));
  const bad = [...set.keys()].filter((n) => !VENDOR_FILE.test(n));
  if (bad.length) throw fail(`not TUF metadata file names: ${bad.map((n) => n.slice(0, 64)).join(', ')}`);
  const dir = vendorDir(dataDir, vendor);
  const pinFile = vendorPinFile(dataDir, vendor);
  const pinned = existsSync(pinFile) ? readFileSync(pinFile) : null;
  if (!pinned && !opts.root)
    throw fail(
      `no pinned root for vendor ${vendor} on this server: the first upload must come with the vendor's root (${opts.hint ?? '--vendor-root FILE'})`,
    );
  // Files stored before pinning existed were never verified: on first pin they are not trusted (and replaced).
  const trusted = (name: string) => (pinned ? readVendorFile(dataDir, vendor, name) : null);
  try {
    if (opts.root) {
      const given = load(MetadataKind.Root, 'the root given', opts.root);
      const name = `${given.signed.version}.root.json`;
      if (pinned) {
        const pin = load(MetadataKind.Root, 'the pinned root', pinned);
        const known = given.signed.version === pin.signed.version ? pinned : trusted(name);
        if (known && !load(MetadataKind.Root, name, known).signed.equals(given.signed))
          throw new TufSetError(`the root given (${name}) differs from the pinned root chain`);
      } else delegate(given, 'root', given, `the root given (${name})`, 'itself');
      const inSet = set.get(name);
      if (inSet && !load(MetadataKind.Root, name, inSet).signed.equals(given.signed))
        throw new TufSetError(`the set's ${name} is not the root given`);
      if (!inSet) set.set(name, opts.root);
    }
    const result = verifyTufSet({
      files: set,
      anchor: pinned ?? opts.root!,
      trusted,
      now: opts.now,
    });
    return { vendor, dir, pinFile, firstPin: !pinned, result };
  } catch (e) {
    if (e instanceof TufSetError) throw fail(e.message);
    throw e;
  }
}

/** Writes a verified plan: roots, snapshot, targets, timestamp.json last (the commit point for readers), then the pin. */
export function commitVendorMetadata(plan: VendorPlan, journal = new FileJournal()): void {
  if (!plan.result.newer) return;
  for (const w of plan.result.writes) journal.write(join(plan.dir, w.name), w.bytes);
  if (plan.firstPin && existsSync(plan.dir))
    for (const f of readdirSync(plan.dir))
      if (!plan.result.chain.includes(f) && !f.startsWith('.')) journal.remove(join(plan.dir, f));
  const pin = existsSync(plan.pinFile) ? readFileSync(plan.pinFile) : null;
  if (!pin?.equals(plan.result.root.bytes)) journal.write(plan.pinFile, plan.result.root.bytes);
}

export interface VendorStoreResult {
  stored: boolean;
  timestamp_version: number;
  root_version: number;
  /** The vendor's root was pinned by this upload. */
  pinned: boolean;
  root_keyids: string[];
  /** Names in the upload that are not part of the verified chain (not stored). */
  ignored: string[];
}

/**
 * Verifies and stores a vendor's metadata set (see the file header). An older set (a rollback) is not stored and
 * changes nothing. Every file is written atomically, timestamp.json last, so a reader sees the previous set or the
 * new one. Throws TufSetError (one line) when the set does not verify; nothing is written then.
 */
export function storeVendorMetadata(
  dataDir: string,
  vendor: string,
  files: Map<string, Buffer> | Record<string, Buffer>,
  opts: { root?: Buffer; now?: number; hint?: string } = {},
): VendorStoreResult {
  const plan = planVendorMetadata(dataDir, vendor, files, { ...opts, now: opts.now ?? Date.now() });
  const journal = new FileJournal();
  try {
    commitVendorMetadata(plan, journal);
  } catch (e) {
    journal.undo();
    throw e;
  }
  return {
    stored: plan.result.newer,
    timestamp_version: plan.result.timestampVersion,
    root_version: plan.result.root.version,
    pinned: plan.firstPin,
    root_keyids: plan.result.root.keyids,
    ignored: plan.result.ignored,
  };
}

/** Every vendor with metadata on this server, and its files (for bundles). */
export function vendorSets(dataDir: string): Array<{ vendor: string; files: string[] }> {
  const root = join(dataDir, 'vendor-tuf');
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && VENDOR_NAME.test(e.name))
    .map((e) => ({
      vendor: e.name,
      files: readdirSync(join(root, e.name)).filter((f) => VENDOR_FILE.test(f)),
    }))
    .filter((s) => s.files.includes('timestamp.json'));
}
