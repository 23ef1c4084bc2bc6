// The organisation's TUF repository on the server: root, targets, snapshot and timestamp metadata,
// written with @tufjs/models and signed with ed25519. Consistent snapshots: every targets and snapshot
// version is a new file ("N.targets.json"), so the single commit point of any change is the atomic
// rename of timestamp.json; a crash before it leaves the previous, still valid, repository in place.
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Metadata,
  MetadataKind,
  MetaFile,
  Root,
  Snapshot,
  TargetFile,
  Targets,
  Timestamp,
} from '@tufjs/models';
// Role is not re-exported by the package index.
import { Role } from '@tufjs/models/dist/role.js';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { targetPath } from '../target-path.ts';
import {
  generateKey,
  type KeyFile,
  type RoleName,
  readRoleKeys,
  signerOf,
  tufKey,
  writeKeyFile,
} from './keys.ts';

const DAY = 86_400_000;
const SPEC = '1.0.31';

/** How long each role's metadata stays valid when (re)signed; the timestamp is re-signed lazily. */
export const DEFAULT_VALIDITY: Record<Exclude<RoleName, 'root'>, number> & { root: number } = {
  root: 365 * DAY,
  targets: 90 * DAY,
  snapshot: 30 * DAY,
  timestamp: 1 * DAY,
};

export interface TargetEntry {
  /** `<component>/<version>/<artifact name>` */
  path: string;
  sha256: string;
  length: number;
  /** `{component, version, name}` and, when the release records one, `mode` (the file mode, 0..0o777). */
  custom?: Record<string, string | number>;
}

export interface InitOptions {
  rootKeys?: number;
  rootThreshold?: number;
  /** Where the root private keys go (an offline medium); default: the repository's keys folder. */
  rootKeyDir?: string;
  now?: number;
}

export function tufExpires(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const encode = (md: Metadata<Root | Targets | Snapshot | Timestamp>) =>
  Buffer.from(JSON.stringify(md.toJSON()));

/** Runs `fn` holding a lock that other processes share (server replicas on one PostgreSQL). */
export type SharedLock = <T>(fn: () => Promise<T>) => Promise<T>;

// One writer at a time per repository inside this process, and across processes when a shared lock is set:
// replicas sharing a data folder must never sign two different targets files with the same version.
const locks = new Map<string, Promise<unknown>>();
const sharedLocks = new Map<string, SharedLock>();
// The repositories whose lock the current async call chain holds: a holder calling a writer does not wait for
// itself (approval holds the lock around its database transaction and signs inside it).
const held = new AsyncLocalStorage<ReadonlySet<string>>();

/** Makes every writer of the repository in `dataDir` also hold `lock` (null: this process alone). */
export function shareRepositoryLock(dataDir: string, lock: SharedLock | null): void {
  const key = join(dataDir, 'tuf');
  if (lock) sharedLocks.set(key, lock);
  else sharedLocks.delete(key);
}

/**
 * Runs `fn` as the only writer of the repository in `dataDir` (this process and, when shared, every replica).
 * Take it before opening a database transaction that signs: waiting for it holds no database connection.
 */
export function withRepositoryLock<T>(dataDir: string, fn: () => Promise<T>): Promise<T> {
  return serial(join(dataDir, 'tuf'), fn);
}

function serial<T>(key: string, fn: () => T | Promise<T>): Promise<T> {
  const mine = held.getStore();
  if (mine?.has(key)) return Promise.resolve().then(fn);
  const prev = locks.get(key) ?? Promise.resolve();
  const locked = () =>
    held.run(new Set([...(mine ?? []), key]), () => {
      const shared = sharedLocks.get(key);
      return shared ? shared(async () => fn()) : fn();
    });
  const next = prev.then(locked, locked);
  locks.set(
    key,
    next.catch(() => {}),
  );
  return next;
}

export class TufRepository {
  readonly metadataDir: string;
  readonly keyDir: string;

  constructor(readonly dir: string) {
    this.metadataDir = join(dir, 'metadata');
    this.keyDir = join(dir, 'keys');
  }

  /** The repository of a server data folder (DATA/tuf), or null when `keys init` was never run. */
  static open(dataDir: string): TufRepository | null {
    const r = new TufRepository(join(dataDir, 'tuf'));
    return existsSync(join(r.metadataDir, 'timestamp.json')) ? r : null;
  }

  /** `keys init`: new keys, root v1 signed by every root key, empty targets, snapshot and timestamp. */
  static init(
    dataDir: string,
    opts: InitOptions = {},
  ): { repo: TufRepository; root: Metadata<Root>; keys: KeyFile[] } {
    const n = opts.rootKeys ?? 1;
    const k = opts.rootThreshold ?? 1;
    if (!Number.isInteger(n) || !Number.isInteger(k) || k < 1 || n < k)
      throw new Error(`root threshold must satisfy 1 <= k <= n (got ${k}-of-${n})`);
    const repo = new TufRepository(join(dataDir, 'tuf'));
    if (existsSync(repo.metadataDir) && readdirSync(repo.metadataDir).some((f) => f.endsWith('root.json')))
      throw new Error(`${repo.dir} already holds a TUF root; use keys rotate-root to change keys`);
    mkdirSync(repo.keyDir, { recursive: true, mode: 0o700 });
    mkdirSync(repo.metadataDir, { recursive: true });
    const rootKeyDir = opts.rootKeyDir ?? repo.keyDir;
    mkdirSync(rootKeyDir, { recursive: true, mode: 0o700 });
    const now = opts.now ?? Date.now();
    const rootKeys = Array.from({ length: n }, () => generateKey('root'));
    rootKeys.forEach((key, i) => {
      writeKeyFile(rootKeyDir, `root-${i + 1}`, key);
    });
    const online = (['targets', 'snapshot', 'timestamp'] as const).map((role) => {
      const key = generateKey(role);
      writeKeyFile(repo.keyDir, role, key);
      return key;
    });
    const root = buildRoot(1, now, rootKeys, k, online);
    for (const key of rootKeys) root.sign(signerOf(key));
    repo.writeRoot(root);
    repo.publishSync(now, () => false, { force: true });
    return { repo, root, keys: [...rootKeys, ...online] };
  }

  /** False on a mirror that holds the organisation's metadata but none of its online keys. */
  canSign(): boolean {
    return readRoleKeys(this.keyDir, 'timestamp').length > 0;
  }

  private readJson(name: string): Record<string, never> {
    return JSON.parse(readFileSync(join(this.metadataDir, name), 'utf8'));
  }

  root(): Metadata<Root> {
    return Metadata.fromJSON(MetadataKind.Root, this.readJson('root.json'));
  }
  timestamp(): Metadata<Timestamp> {
    return Metadata.fromJSON(MetadataKind.Timestamp, this.readJson('timestamp.json'));
  }
  snapshot(): Metadata<Snapshot> {
    return Metadata.fromJSON(
      MetadataKind.Snapshot,
      this.readJson(`${this.timestamp().signed.snapshotMeta.version}.snapshot.json`),
    );
  }
  targets(): Metadata<Targets> {
    const v = this.snapshot().signed.meta['targets.json'].version;
    return Metadata.fromJSON(MetadataKind.Targets, this.readJson(`${v}.targets.json`));
  }

  /** Raw bytes of a published metadata file ("1.root.json", "timestamp.json", ...) or null. */
  file(name: string): Buffer | null {
    if (!/^([0-9]+\.)?(root|targets|snapshot|timestamp)\.json$/.test(name)) return null;
    try {
      return readFileSync(join(this.metadataDir, name));
    } catch {
      return null;
    }
  }

  /** Names of every published metadata file (for export and bundles). */
  files(): string[] {
    return readdirSync(this.metadataDir)
      .filter((f) => this.file(f) !== null && !f.startsWith('.'))
      .sort();
  }

  private writeRoot(root: Metadata<Root>): void {
    const bytes = encode(root);
    writeFileAtomicSync(join(this.metadataDir, `${root.signed.version}.root.json`), bytes);
    writeFileAtomicSync(join(this.metadataDir, 'root.json'), bytes);
  }

  private onlineKey(role: Exclude<RoleName, 'root'>): KeyFile {
    const root = this.root().signed;
    const want = new Set(root.roles[role].keyIDs);
    const keys = readRoleKeys(this.keyDir, role).filter((k) => want.has(k.keyid));
    if (keys.length < root.roles[role].threshold)
      throw new Error(`the ${role} signing key is missing from ${this.keyDir}`);
    return keys[0];
  }

  /** Adds or replaces targets; re-signs targets, snapshot and timestamp. Idempotent for identical entries. */
  addTargets(
    entries: TargetEntry[],
    now: number,
    validForMs?: number,
  ): Promise<{ changed: boolean; version: number }> {
    return serial(this.dir, () =>
      this.publishSync(
        now,
        (t) => {
          let changed = false;
          for (const e of entries) {
            // Own properties only: a path is data, and `__proto__` must never reach Object.prototype.
            const cur = Object.hasOwn(t.targets, e.path) ? t.targets[e.path] : undefined;
            // A signed file mode is part of the release: re-signing the same file (same hash and length) from a
            // source that does not know modes (e.g. the start-up re-sign of approved releases) never drops it.
            let custom = e.custom;
            const curMode = (cur?.custom as { mode?: unknown } | undefined)?.mode;
            if (
              custom &&
              !Object.hasOwn(custom, 'mode') &&
              curMode !== undefined &&
              cur?.length === e.length &&
              cur.hashes.sha256 === e.sha256
            )
              custom = { ...custom, mode: curMode as number };
            const next = new TargetFile({
              path: e.path,
              length: e.length,
              hashes: { sha256: e.sha256 },
              unrecognizedFields: custom ? { custom } : {},
            });
            if (cur?.equals(next)) continue;
            Object.defineProperty(t.targets, e.path, {
              value: next,
              enumerable: true,
              writable: true,
              configurable: true,
            });
            changed = true;
          }
          return changed;
        },
        { validForMs },
      ),
    );
  }

  /** Removes targets (e.g. a release withdrawn before `repo gc`). */
  removeTargets(paths: string[], now: number): Promise<{ changed: boolean; version: number }> {
    return serial(this.dir, () =>
      this.publishSync(now, (t) => {
        let changed = false;
        for (const p of paths) {
          if (!Object.hasOwn(t.targets, p)) continue;
          delete t.targets[p];
          changed = true;
        }
        return changed;
      }),
    );
  }

  /** Re-signs whatever is past half of its validity (or shorter than validForMs); cheap when fresh. */
  freshen(now: number, validForMs?: number): Promise<{ changed: boolean; version: number }> {
    // A mirror (metadata imported from a bundle, no keys here) serves what it has; devices judge expiry.
    if (!this.canSign()) return Promise.resolve({ changed: false, version: 0 });
    // Checked before the lock: every timestamp fetch calls this, and the lock (a PostgreSQL advisory lock
    // with replicas) would put a database round trip, and any approval in progress, in front of each one.
    const fresh = this.freshVersion(now, validForMs);
    if (fresh !== null) return Promise.resolve({ changed: false, version: fresh });
    return serial(this.dir, () => this.publishSync(now, () => false, { validForMs }));
  }

  /** The targets version when nothing needs re-signing at `now` (as publishSync judges it), else null. */
  private freshVersion(now: number, validForMs?: number): number | null {
    const stale = (expires: string, role: Exclude<RoleName, 'root'>) =>
      Date.parse(expires) - now <
      Math.max(Math.max(DEFAULT_VALIDITY[role], validForMs ?? 0) / 2, validForMs ?? 0);
    try {
      const ts = this.timestamp().signed;
      const snap = this.snapshot().signed;
      const t = this.targets().signed;
      if (stale(ts.expires, 'timestamp') || stale(snap.expires, 'snapshot') || stale(t.expires, 'targets'))
        return null;
      return t.version;
    } catch {
      return null; // files missing or mid-write: the locked path decides
    }
  }

  /**
   * The one write path: mutate a copy of targets, then write new targets/snapshot versions as new files and
   * timestamp.json last (the commit point). `validForMs` stretches every expiry (offline journeys).
   */
  private publishSync(
    now: number,
    mutate: (t: Targets) => boolean,
    opts: { force?: boolean; validForMs?: number } = {},
  ): { changed: boolean; version: number } {
    const has = existsSync(join(this.metadataDir, 'timestamp.json'));
    const validity = (role: Exclude<RoleName, 'root'>) =>
      Math.max(DEFAULT_VALIDITY[role], opts.validForMs ?? 0);
    const stale = (expires: string, role: Exclude<RoleName, 'root'>) =>
      Date.parse(expires) - now < Math.max(validity(role) / 2, opts.validForMs ?? 0);

    const oldTargets = has ? this.targets() : null;
    const t = new Targets({
      version: (oldTargets?.signed.version ?? 0) + 1,
      specVersion: SPEC,
      expires: tufExpires(now + validity('targets')),
      targets: { ...(oldTargets?.signed.targets ?? {}) },
    });
    const changed = mutate(t);
    let targetsMeta: MetaFile;
    const newTargets = !oldTargets || opts.force || changed || stale(oldTargets.signed.expires, 'targets');
    if (newTargets) {
      const md = new Metadata(t);
      md.sign(signerOf(this.onlineKey('targets')));
      const bytes = encode(md);
      writeFileAtomicSync(join(this.metadataDir, `${t.version}.targets.json`), bytes);
      targetsMeta = new MetaFile({
        version: t.version,
        length: bytes.length,
        hashes: { sha256: sha256(bytes) },
      });
    } else {
      targetsMeta = this.snapshot().signed.meta['targets.json'];
    }

    const oldSnap = has ? this.snapshot() : null;
    const newSnap = newTargets || !oldSnap || stale(oldSnap.signed.expires, 'snapshot');
    let snapMeta: MetaFile;
    if (newSnap) {
      const s = new Snapshot({
        version: (oldSnap?.signed.version ?? 0) + 1,
        specVersion: SPEC,
        expires: tufExpires(now + validity('snapshot')),
        meta: { 'targets.json': targetsMeta },
      });
      const md = new Metadata(s);
      md.sign(signerOf(this.onlineKey('snapshot')));
      const bytes = encode(md);
      writeFileAtomicSync(join(this.metadataDir, `${s.version}.snapshot.json`), bytes);
      snapMeta = new MetaFile({
        version: s.version,
        length: bytes.length,
        hashes: { sha256: sha256(bytes) },
      });
    } else {
      snapMeta = this.timestamp().signed.snapshotMeta;
    }

    const oldTs = has ? this.timestamp() : null;
    if (newSnap || !oldTs || stale(oldTs.signed.expires, 'timestamp')) {
      const ts = new Timestamp({
        version: (oldTs?.signed.version ?? 0) + 1,
        specVersion: SPEC,
        expires: tufExpires(now + validity('timestamp')),
        snapshotMeta: snapMeta,
      });
      const md = new Metadata(ts);
      md.sign(signerOf(this.onlineKey('timestamp')));
      writeFileAtomicSync(join(this.metadataDir, 'timestamp.json'), encode(md));
    }
    return { changed: newTargets || newSnap, version: targetsMeta.version };
  }

  /**
   * Root rotation N -> N+1: the new root is signed by a threshold of the current root keys and by every new
   * root key, so clients pinned to N can walk the chain. Keys left out of the new root are revoked.
   * `rotateOnline` replaces online role keys too (a lost or leaked targets/snapshot/timestamp key).
   */
  rotateRoot(opts: {
    oldRootKeys: KeyFile[];
    newRootKeys: KeyFile[];
    threshold: number;
    rotateOnline?: Array<Exclude<RoleName, 'root'>>;
    now?: number;
  }): Promise<Metadata<Root>> {
    return serial(this.dir, () => {
      const now = opts.now ?? Date.now();
      const cur = this.root().signed;
      if (opts.threshold < 1 || opts.threshold > opts.newRootKeys.length)
        throw new Error(`root threshold ${opts.threshold} does not fit ${opts.newRootKeys.length} keys`);
      const trusted = opts.oldRootKeys.filter((k) => cur.roles.root.keyIDs.includes(k.keyid));
      if (trusted.length < cur.roles.root.threshold)
        throw new Error(
          `rotation needs ${cur.roles.root.threshold} of the current root keys, got ${trusted.length}`,
        );
      const online = (['targets', 'snapshot', 'timestamp'] as const).map((role) => {
        if (opts.rotateOnline?.includes(role)) {
          const k = generateKey(role);
          writeKeyFile(this.keyDir, `${role}-${k.keyid.slice(0, 8)}`, k);
          return k;
        }
        return this.onlineKey(role);
      });
      const root = buildRoot(cur.version + 1, now, opts.newRootKeys, opts.threshold, online);
      for (const k of trusted) root.sign(signerOf(k));
      for (const k of opts.newRootKeys) if (!trusted.some((t) => t.keyid === k.keyid)) root.sign(signerOf(k));
      this.writeRoot(root);
      // New online keys must sign fresh metadata at once, or clients would reject the old signatures.
      this.publishSync(now, () => false, { force: true });
      return root;
    });
  }
}

function buildRoot(
  version: number,
  now: number,
  rootKeys: KeyFile[],
  threshold: number,
  online: KeyFile[],
): Metadata<Root> {
  const root = new Root({
    version,
    specVersion: SPEC,
    expires: tufExpires(now + DEFAULT_VALIDITY.root),
    consistentSnapshot: true,
    keys: {},
    roles: {
      root: new Role({ keyIDs: [], threshold }),
      targets: new Role({ keyIDs: [], threshold: 1 }),
      snapshot: new Role({ keyIDs: [], threshold: 1 }),
      timestamp: new Role({ keyIDs: [], threshold: 1 }),
    },
  });
  for (const k of rootKeys) root.addKey(tufKey(k), 'root');
  for (const k of online) root.addKey(tufKey(k), k.role);
  return new Metadata(root);
}

/**
 * Approval hook: puts a release's artifacts into the signed targets (custom: component, version, name and the
 * file mode when the release records one) and re-signs targets, snapshot and timestamp. Returns null when the
 * server has no TUF keys (`keys init` not run): approval then stays an unsigned database flag, as before.
 */
export async function publishRelease(
  dataDir: string,
  rel: {
    component: string;
    version: string;
    artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
  },
  now: number,
): Promise<{ targetsVersion: number; changed: boolean } | null> {
  const repo = TufRepository.open(dataDir);
  if (!repo) return null;
  const r = await repo.addTargets(releaseTargets(rel), now);
  return { targetsVersion: r.version, changed: r.changed };
}

/** A release's artifacts as signed targets (custom: component, version, name and the mode when recorded). */
export function releaseTargets(rel: {
  component: string;
  version: string;
  artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
}) {
  return rel.artifacts.map((a) => ({
    path: targetPath(rel.component, rel.version, a.name),
    sha256: a.sha256,
    length: a.length,
    custom: {
      component: rel.component,
      version: rel.version,
      name: a.name,
      ...(typeof a.mode === 'number' ? { mode: a.mode } : {}),
    },
  }));
}
