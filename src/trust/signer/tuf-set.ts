// The TUF client workflow (spec §5.3–5.6) over a complete metadata set held in memory, from a trusted root: what
// the server runs on a vendor's metadata before storing any of it (vendor-store.ts) and what `release import`
// runs before uploading it (vendor-import.ts). The checks are done with @tufjs/models (Metadata.fromJSON,
// verifyDelegate, MetaFile.verify): no crypto here.
import {
  Metadata,
  MetadataKind,
  type Root,
  type Snapshot,
  type Targets,
  type Timestamp,
} from '@tufjs/models';

/** A metadata set that does not verify; the message is one line. */
export class TufSetError extends Error {}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

type Kind = Root | Timestamp | Snapshot | Targets;

export function load(kind: MetadataKind.Root, name: string, bytes: Buffer): Metadata<Root>;
export function load(kind: MetadataKind.Timestamp, name: string, bytes: Buffer): Metadata<Timestamp>;
export function load(kind: MetadataKind.Snapshot, name: string, bytes: Buffer): Metadata<Snapshot>;
export function load(kind: MetadataKind.Targets, name: string, bytes: Buffer): Metadata<Targets>;
export function load(kind: MetadataKind, name: string, bytes: Buffer): Metadata<Kind> {
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
export function delegate(
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
