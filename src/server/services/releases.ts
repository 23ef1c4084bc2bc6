// Release operations: import (from uploaded blobs, or from a verified offline bundle), approve (signed into the
// organisation's TUF targets) and list. Each runs in one database transaction, audited.
import { ArtifactNames, badArtifactName } from '../../protocol/names.ts';
import {
  publishRelease,
  releaseTargets,
  TufRepository,
  withRepositoryLock,
} from '../../trust/signer/tuf-repository.ts';
import type { Governance } from '../config.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import {
  findRelease,
  insertRelease,
  listApprovedReleases,
  listReleases,
  markReleaseApproved,
  type Release,
  type ReleaseArtifact,
  releaseUsesBlob,
} from '../db/releases.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import { parseRef } from './release-ref.ts';
import { type AwaitingApproval, releaseAwaiting, releaseFourEyesRefusal } from './rollout-rules.ts';

export type { ReleaseArtifact };

/** A release as the admin API shows it. */
export interface ReleaseView {
  component: string;
  version: string;
  /** `mode`: the file's permission bits (0..0o777) as imported; absent for releases imported without one. */
  artifacts: ReleaseArtifact[];
  created_at: number;
  approved: boolean;
  approved_at: number | null;
  approved_by: string | null;
  /** Who imported it (null: imported before four eyes, or from a bundle). */
  imported_by: string | null;
  /** While unapproved: what waits and who may not approve it (four eyes); null once approved. */
  awaiting_approval: AwaitingApproval | null;
  provenance: Record<string, unknown>;
}

/** What the release import checks artifacts against: the blobs uploaded so far. */
export interface BlobIndex {
  has(sha256: string): boolean;
  size(sha256: string): number;
}

/** Maps a release to its admin view (`fourEyes`: the server-wide rule, which `awaiting_approval` reflects). */
export function releaseView(r: Release, fourEyes = true): ReleaseView {
  return {
    component: r.component,
    version: r.version,
    artifacts: r.artifacts,
    created_at: r.createdAt,
    approved: r.approvedAt !== null,
    approved_at: r.approvedAt,
    approved_by: r.approvedBy,
    imported_by: r.importedBy,
    awaiting_approval: releaseAwaiting(
      { ref: `${r.component}@${r.version}`, approvedAt: r.approvedAt, importedBy: r.importedBy },
      fourEyes,
    ),
    provenance: r.provenance,
  };
}

/** Every release's view, oldest first. */
export async function releaseViews(db: Db, governance?: Governance): Promise<ReleaseView[]> {
  const fourEyes = governance?.fourEyes ?? true;
  return (await listReleases(db)).map((r) => releaseView(r, fourEyes));
}

/**
 * Pure: artifacts in the one canonical shape and key order (name, sha256, length, mode when given), so what is
 * signed, offered and compared (bundle import) is the same whatever order the client sent.
 */
export function canonicalArtifacts(artifacts: ReleaseArtifact[]): ReleaseArtifact[] {
  return artifacts.map((a) => ({
    name: a.name,
    sha256: a.sha256,
    length: a.length,
    ...(typeof a.mode === 'number' ? { mode: a.mode } : {}),
  }));
}

/** Pure: true when two artifact lists hold the same files (in any order). */
export function sameArtifacts(a: ReleaseArtifact[], b: ReleaseArtifact[]): boolean {
  const sorted = (x: ReleaseArtifact[]) =>
    JSON.stringify([...x].sort((p, q) => p.name.localeCompare(q.name)));
  return sorted(a) === sorted(b);
}

/**
 * Registers an immutable release from uploaded blobs (400 for a bad name or a missing or short blob, 409 when it
 * exists), audited, in one transaction. `actor` is recorded as its importer (four eyes); without one (offline
 * callers) nobody is, and the audit names `admin` as before.
 */
export async function importRelease(
  db: Db,
  blobs: BlobIndex,
  req: {
    component: string;
    version: string;
    artifacts: ReleaseArtifact[];
    provenance?: Record<string, unknown>;
  },
  now: number,
  actor?: string,
): Promise<void> {
  const artifacts = canonicalArtifacts(req.artifacts);
  // The same rules every agent applies to an offer: a release the server accepts is one devices accept.
  const names = new ArtifactNames();
  for (const a of artifacts) {
    const bad = badArtifactName(a.name) ?? names.add(a.name);
    if (bad) throw badRequest(bad);
    if (!blobs.has(a.sha256)) throw badRequest(`blob ${a.sha256} of "${a.name}" was not uploaded`);
    if (blobs.size(a.sha256) !== a.length) throw badRequest(`length of "${a.name}" does not match its blob`);
  }
  const provenance = req.provenance ?? {};
  await db.transaction().execute(async (tx) => {
    if (await findRelease(tx, req.component, req.version))
      throw conflict(`release ${req.component}@${req.version} exists; releases are immutable`);
    await insertRelease(tx, {
      component: req.component,
      version: req.version,
      artifacts,
      provenance,
      createdAt: now,
      importedBy: actor ?? null,
    });
    await appendAudit(tx, {
      at: now,
      actor: actor ?? 'admin',
      action: 'release.imported',
      subject: `release/${req.component}@${req.version}`,
      detail: { artifacts, provenance },
    });
  });
}

/**
 * Approves a release (404 when missing): signed into the organisation's TUF targets inside the transaction, so
 * a signing failure undoes the approval. Approving again re-signs and changes nothing else. Four eyes (unless
 * `governance.fourEyes` is false): its importer may not approve it (409, before anything is signed).
 */
export async function approveRelease(
  db: Db,
  dataDir: string,
  ref: string,
  now: number,
  actor?: string,
  governance?: Governance,
): Promise<{ component: string; version: string; approved: true }> {
  const { component, version } = parseRef(ref);
  // The signing lock first, then the transaction: waiting for another approval (here or on another replica)
  // holds no database connection, so concurrent approvals cannot exhaust the pool.
  await withRepositoryLock(dataDir, () =>
    db.transaction().execute(async (tx) => {
      const rel = await findRelease(tx, component, version);
      if (!rel) throw notFound(`no release ${component}@${version}`);
      // Checked before signing: the TUF targets are files, which a rolled-back transaction would not undo.
      const fourEyes = releaseFourEyesRefusal({
        ref: `${component}@${version}`,
        importedBy: rel.approvedAt === null ? rel.importedBy : null,
        approver: actor,
        fourEyes: governance?.fourEyes ?? true,
      });
      if (fourEyes) throw conflict(fourEyes);
      const signed = await publishRelease(dataDir, { component, version, artifacts: rel.artifacts }, now);
      if (rel.approvedAt !== null) return;
      await markReleaseApproved(tx, rel.id, now, actor ?? 'admin');
      await appendAudit(tx, {
        at: now,
        actor: actor ?? 'admin',
        action: 'release.approved',
        subject: `release/${component}@${version}`,
        detail: signed ? { tuf_targets_version: signed.targetsVersion } : { tuf: 'unsigned (no keys)' },
      });
    }),
  );
  return { component, version, approved: true };
}

/** A release that arrived in a verified offline bundle (its targets are organisation-signed). */
export interface BundledRelease {
  component: string;
  version: string;
  artifacts: ReleaseArtifact[];
}

/**
 * Registers verified bundle releases as approved, in one transaction; existing identical releases are left
 * alone, one that exists with other content refuses the whole import. Returns the refs added.
 */
export async function registerBundleReleases(
  db: Db,
  releases: BundledRelease[],
  opts: { file: string; user: string | undefined; dryRun?: boolean; now: number },
): Promise<string[]> {
  const added: string[] = [];
  await db.transaction().execute(async (tx) => {
    for (const r of releases) {
      const existing = await findRelease(tx, r.component, r.version);
      if (existing) {
        if (!sameArtifacts(existing.artifacts, r.artifacts))
          throw new Error(
            `${r.component}@${r.version} exists here with other content; releases are immutable`,
          );
        continue;
      }
      if (opts.dryRun) continue;
      await insertRelease(tx, {
        component: r.component,
        version: r.version,
        artifacts: r.artifacts,
        provenance: { bundle: opts.file, imported_by: opts.user ?? 'unknown' },
        createdAt: opts.now,
        approvedAt: opts.now,
        approvedBy: 'bundle (organisation-signed targets)',
      });
      await appendAudit(tx, {
        at: opts.now,
        actor: opts.user ?? 'cli',
        action: 'release.imported-from-bundle',
        subject: `release/${r.component}@${r.version}`,
        detail: { bundle: opts.file, artifacts: r.artifacts },
      });
      added.push(`${r.component}@${r.version}`);
    }
  });
  return added;
}

/** Whether any release lists a blob (a name that is not a sha256 counts as used: such a file is never removed). */
export async function blobInUse(db: Db, sha256: string): Promise<boolean> {
  if (!/^[0-9a-f]{64}$/.test(sha256)) return true;
  return releaseUsesBlob(db, sha256, false);
}

/** Signs every approved release into the TUF targets (approvals made before `keys init`); no keys, no change. */
export async function signApprovedReleases(db: Db, dataDir: string, now: number): Promise<void> {
  const repo = TufRepository.open(dataDir);
  if (!repo) return;
  const entries = (await listApprovedReleases(db)).flatMap((r) => releaseTargets(r));
  if (!entries.length || !repo.canSign()) return;
  await repo.addTargets(entries, now);
}
