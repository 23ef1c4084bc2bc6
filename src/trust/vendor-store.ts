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
import {
  Metadata,
  MetadataKind,
  type Root,
  type Snapshot,
  type Targets,
  type Timestamp,
} from '@tufjs/models';
import { writeFileAtomicSync } from '../files/atomic-file.ts';

export const VENDOR_FILE = /^(\d+\.)?(root|timestamp|snapshot|targets)\.json$/;
export const VENDOR_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A metadata set that does not verify; the message is one line. */
export class TufSetError extends Error {}

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

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

type Kind = Root | Timestamp | Snapshot | Targets;

function load(kind: MetadataKind.Root, name: string, bytes: Buffer): Metadata<Root>;
function load(kind: MetadataKind.Timestamp, name: string, bytes: Buffer): Metadata<Timestamp>;
function load(kind: MetadataKind.Snapshot, name: string, bytes: Buffer): Metadata<Snapshot>;
function load(kind: MetadataKind.Targets, name: string, bytes: Buffer): Metadata<Targets>;
function load(kind: MetadataKind, name: string, bytes: Buffer): Metadata<Kind> {
  let data: unknown;
  try {
    data = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new TufSetError(`${name} is not JSON`);
  }
  let md: Metadata<Kind>;
  try {
    md = Metadata.fromJSON(kind as MetadataKind.Root, data as never);
  } catch (e) {
    throw new TufSetError(`${name} is not ${kind} metadata: ${oneLine((e as Error).message)}`);
  }
  // tuf-js treats an unparseable expiry as "never expires"; a version must be a plain counter.
  if (!Number.isSafeInteger(md.signed.version) || md.signed.version < 1)
    throw new TufSetError(`${name} has an invalid version ${md.signed.version}`);
  if (!Number.isFinite(Date.parse(md.signed.expires)))
    throw new TufSetError(`${name} has an invalid expiry "${String(md.signed.expires).slice(0, 40)}"`);
  return md;
}

/** `delegator` (a root) must list keys that signed `md` for `role` to the role's threshold. */
function delegate(
  delegator: Metadata<Root>,
  role: string,
  md: Metadata<Kind>,
  name: string,
  by: string,
): void {
  try {
    delegator.verifyDelegate(role, md);
  } catch (e) {
    throw new TufSetError(`${name}: ${oneLine((e as Error).message)} of ${by}`);
  }
}

export interface TufSetCheck {
  /** The set offered: file name → bytes (hostile until verified). */
  files: Map<string, Buffer>;
  /** The trusted root to start from: the pinned one, or on first use the root the operator supplied. */
  anchor: Buffer;
  /** Files already trusted (stored under the pin); returns null for none (first use). */
  trusted: (name: string) => Buffer | null;
  /** Reference time for expiry (ms). */
  now: number;
}

export interface TufSetResult {
  /** False when the set is older than (or equivocates with) what is already trusted: nothing to write. */
  newer: boolean;
  timestampVersion: number;
  /** The newest root after the chain walk: what is pinned from now on. */
  root: { version: number; bytes: Buffer; keyids: string[] };
  /** Verified files to write, in order: roots, snapshot, targets, timestamp last. Unchanged files are left out. */
  writes: Array<{ name: string; bytes: Buffer }>;
  /** Every file name of the verified chain (for cleaning a folder of anything else). */
  chain: string[];
  /** Names in the set that are not part of the verified chain (never written). */
  ignored: string[];
}

/**
 * The TUF client workflow (spec §5.3–5.6) over a complete metadata set, from a trusted root: root chain in both
 * directions from the anchor, then timestamp, snapshot and targets, with signatures, versions, hashes and lengths,
 * rollback against what is already trusted and expiry. Throws TufSetError with a one-line reason (the caller says
 * whose metadata it is).
 */
export function verifyTufSet(c: TufSetCheck): TufSetResult {
  const anchor = load(MetadataKind.Root, 'the pinned root', c.anchor);
  const anchorV = anchor.signed.version;
  delegate(anchor, 'root', anchor, `root v${anchorV}`, 'itself');

  // Roots offered, by version; the ones already trusted must not change.
  const roots = new Map<number, { md: Metadata<Root>; bytes: Buffer }>();
  for (const [name, bytes] of c.files) {
    const m = /^(\d+)\.root\.json$/.exec(name);
    if (!m) continue;
    const md = load(MetadataKind.Root, name, bytes);
    if (md.signed.version !== Number(m[1]))
      throw new TufSetError(`${name} holds root version ${md.signed.version}`);
    roots.set(md.signed.version, { md, bytes });
  }
  const storedRoot = (v: number) => {
    const b = c.trusted(`${v}.root.json`);
    return b ? load(MetadataKind.Root, `${v}.root.json`, b) : null;
  };
  for (const [v, r] of roots) {
    const known = v === anchorV ? anchor : storedRoot(v);
    if (known && !known.signed.equals(r.md.signed))
      throw new TufSetError(`${v}.root.json differs from the pinned root chain`);
  }
  const checkRotation = (prev: Metadata<Root>, next: Metadata<Root>, name: string) => {
    delegate(prev, 'root', next, name, `root v${prev.signed.version}`);
    delegate(next, 'root', next, name, 'itself');
  };
  // Older roots (for devices pinned to them) must lead, one version at a time, to the pinned root.
  const older = [...roots.keys()].filter((v) => v < anchorV);
  if (older.length) {
    const lo = Math.min(...older);
    const at = (v: number) => (v === anchorV ? anchor : (roots.get(v)?.md ?? storedRoot(v)));
    for (let v = lo; v < anchorV; v++) {
      const cur = at(v);
      const next = at(v + 1);
      if (!cur || !next)
        throw new TufSetError(
          `the root chain from ${lo}.root.json to the pinned root v${anchorV} has no version ${cur ? v + 1 : v}`,
        );
      checkRotation(cur, next, `${v + 1}.root.json`);
    }
  }
  // Newer roots: each signed by a threshold of the previous root's keys and of its own (rotation).
  let root = anchor;
  let rootBytes = c.anchor;
  for (let v = anchorV + 1; roots.has(v); v++) {
    const n = roots.get(v)!;
    checkRotation(root, n.md, `${v}.root.json`);
    root = n.md;
    rootBytes = n.bytes;
  }
  const stray = [...roots.keys()].filter((v) => v > root.signed.version);
  if (stray.length)
    throw new TufSetError(
      `${Math.min(...stray)}.root.json does not follow root v${root.signed.version} (a gap in the root chain)`,
    );
  const by = `root v${root.signed.version}`;

  // timestamp → snapshot → targets, each as its parent signed it.
  const get = (name: string, why: string) => {
    const b = c.files.get(name);
    if (!b) throw new TufSetError(`no ${name} in the set${why}`);
    return b;
  };
  const tsBytes = get('timestamp.json', '');
  const ts = load(MetadataKind.Timestamp, 'timestamp.json', tsBytes);
  delegate(root, 'timestamp', ts, 'timestamp.json', by);
  const consistent = root.signed.consistentSnapshot;
  const sMeta = ts.signed.snapshotMeta;
  const sName = consistent ? `${sMeta.version}.snapshot.json` : 'snapshot.json';
  const sBytes = get(sName, ' (named by timestamp.json)');
  try {
    sMeta.verify(sBytes);
  } catch (e) {
    throw new TufSetError(
      `${sName} does not match the length and hash timestamp.json signed: ${oneLine((e as Error).message)}`,
    );
  }
  const snap = load(MetadataKind.Snapshot, sName, sBytes);
  delegate(root, 'snapshot', snap, sName, by);
  if (snap.signed.version !== sMeta.version)
    throw new TufSetError(
      `${sName} is version ${snap.signed.version}, timestamp.json names ${sMeta.version}`,
    );
  if (!Object.hasOwn(snap.signed.meta, 'targets.json'))
    throw new TufSetError(`${sName} does not list targets.json`);
  const tMeta = snap.signed.meta['targets.json'];
  const tName = consistent ? `${tMeta.version}.targets.json` : 'targets.json';
  const tBytes = get(tName, ` (named by ${sName})`);
  try {
    tMeta.verify(tBytes);
  } catch (e) {
    throw new TufSetError(
      `${tName} does not match the length and hash ${sName} signed: ${oneLine((e as Error).message)}`,
    );
  }
  const targets = load(MetadataKind.Targets, tName, tBytes);
  delegate(root, 'targets', targets, tName, by);
  if (targets.signed.version !== tMeta.version)
    throw new TufSetError(`${tName} is version ${targets.signed.version}, ${sName} names ${tMeta.version}`);

  // Rollback against what is already trusted. A stored timestamp that the newest root's keys no longer verify
  // (its key was rotated) is forgotten, as the TUF client does (fast-forward recovery).
  let newer = true;
  let timestampVersion = ts.signed.version;
  const oldTsBytes = c.trusted('timestamp.json');
  let oldTs: Metadata<Timestamp> | null = null;
  if (oldTsBytes)
    try {
      oldTs = load(MetadataKind.Timestamp, 'timestamp.json', oldTsBytes);
      root.verifyDelegate('timestamp', oldTs);
    } catch {
      oldTs = null;
    }
  if (oldTs && oldTsBytes) {
    if (ts.signed.version < oldTs.signed.version) newer = false;
    else if (ts.signed.version === oldTs.signed.version) newer = oldTsBytes.equals(tsBytes);
    else {
      const oldSMeta = oldTs.signed.snapshotMeta;
      if (sMeta.version < oldSMeta.version)
        throw new TufSetError(
          `snapshot version went backwards: v${sMeta.version} after the trusted v${oldSMeta.version}`,
        );
      const oldSBytes = c.trusted(consistent ? `${oldSMeta.version}.snapshot.json` : 'snapshot.json');
      let oldSnap: Metadata<Snapshot> | null = null;
      if (oldSBytes)
        try {
          oldSnap = load(MetadataKind.Snapshot, 'the trusted snapshot', oldSBytes);
          root.verifyDelegate('snapshot', oldSnap);
        } catch {
          oldSnap = null;
        }
      for (const [file, m] of Object.entries(oldSnap?.signed.meta ?? {})) {
        if (!Object.hasOwn(snap.signed.meta, file))
          throw new TufSetError(`${sName} no longer lists ${file} (the trusted snapshot does)`);
        if (snap.signed.meta[file].version < m.version)
          throw new TufSetError(
            `${file} version went backwards: v${snap.signed.meta[file].version} after the trusted v${m.version}`,
          );
      }
    }
    if (!newer) timestampVersion = oldTs.signed.version;
  }

  // Freeze: only what would be stored must be current (an older set is simply not stored).
  if (newer) {
    const at = new Date(c.now);
    for (const [md, name] of [
      [root, `root v${root.signed.version}`],
      [ts, 'timestamp.json'],
      [snap, sName],
      [targets, tName],
    ] as Array<[Metadata<Kind>, string]>)
      if (md.signed.isExpired(at)) throw new TufSetError(`${name} expired at ${md.signed.expires}`);
  }

  const chain: string[] = [];
  const writes: TufSetResult['writes'] = [];
  const rootVersions = new Set([...roots.keys(), anchorV]);
  for (const v of [...rootVersions].sort((a, b) => a - b)) {
    const name = `${v}.root.json`;
    chain.push(name);
    // Root files are immutable: one already trusted is never rewritten (even with other signature bytes).
    if (!c.trusted(name)) writes.push({ name, bytes: roots.get(v)?.bytes ?? c.anchor });
  }
  for (const [name, bytes] of [
    [sName, sBytes],
    [tName, tBytes],
    ['timestamp.json', tsBytes],
  ] as Array<[string, Buffer]>) {
    chain.push(name);
    if (!c.trusted(name)?.equals(bytes)) writes.push({ name, bytes });
  }
  return {
    newer,
    timestampVersion,
    root: {
      version: root.signed.version,
      bytes: rootBytes,
      keyids: [...root.signed.roles.root.keyIDs].sort(),
    },
    writes: newer ? writes : [],
    chain,
    ignored: [...c.files.keys()].filter((n) => !chain.includes(n)).sort(),
  };
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
