// Table `releases`: immutable (component, version) with artifacts, provenance and approval. Every query of the
// table lives here; callers get `Release` domain objects, never rows.
import { type Generated, type Insertable, type Selectable, sql } from 'kysely';
import type { Db } from './database.ts';
import { decode, encode, type Json } from './json.ts';

/** One file of a release. `mode`: permission bits (0..0o777) as imported; absent when imported without one. */
export interface ReleaseArtifact {
  name: string;
  sha256: string;
  length: number;
  mode?: number;
}

export interface ReleaseTable {
  id: Generated<number>;
  component: string;
  version: string;
  artifacts: Json<ReleaseArtifact[]>;
  provenance: Json<Record<string, unknown>>;
  created_at: number;
  approved_at: number | null;
  approved_by: string | null;
  imported_by: string | null; // the actor who imported it (four eyes); null on rows from before
}

export type ReleaseRow = Selectable<ReleaseTable>;
export type NewReleaseRow = Insertable<ReleaseTable>;

/** A release as the rest of the server sees it. */
export interface Release {
  id: number;
  component: string;
  version: string;
  artifacts: ReleaseArtifact[];
  provenance: Record<string, unknown>;
  createdAt: number;
  approvedAt: number | null;
  approvedBy: string | null;
  /** The actor who imported it; null on releases from before four eyes (and bundle imports). */
  importedBy: string | null;
}

/** Maps a row to a `Release`. */
export function toRelease(r: ReleaseRow): Release {
  return {
    id: r.id,
    component: r.component,
    version: r.version,
    artifacts: decode(r.artifacts),
    provenance: decode(r.provenance),
    createdAt: r.created_at,
    approvedAt: r.approved_at,
    approvedBy: r.approved_by,
    importedBy: r.imported_by ?? null,
  };
}

/** One release by component and version, or undefined. */
export async function findRelease(db: Db, component: string, version: string): Promise<Release | undefined> {
  const row = await db
    .selectFrom('releases')
    .selectAll()
    .where('component', '=', component)
    .where('version', '=', version)
    .executeTakeFirst();
  return row && toRelease(row);
}

/** Every release, oldest first. */
export async function listReleases(db: Db): Promise<Release[]> {
  const rows = await db.selectFrom('releases').selectAll().orderBy('id').execute();
  return rows.map(toRelease);
}

/** Every approved release, oldest first. */
export async function listApprovedReleases(db: Db): Promise<Release[]> {
  const rows = await db
    .selectFrom('releases')
    .selectAll()
    .where('approved_at', 'is not', null)
    .orderBy('id')
    .execute();
  return rows.map(toRelease);
}

/** True when the release exists and is approved. */
export async function isApprovedRelease(db: Db, component: string, version: string): Promise<boolean> {
  const rel = await db
    .selectFrom('releases')
    .select('id')
    .where('component', '=', component)
    .where('version', '=', version)
    .where('approved_at', 'is not', null)
    .executeTakeFirst();
  return rel !== undefined;
}

/**
 * True when some release (an approved one, with `approvedOnly`) lists the blob. `sha256` must be 64 hex digits:
 * anything else is refused here, which also keeps LIKE's wildcards out of the pattern.
 */
export async function releaseUsesBlob(db: Db, sha256: string, approvedOnly: boolean): Promise<boolean> {
  if (!/^[0-9a-f]{64}$/.test(sha256)) return false;
  // LIKE over the JSON text: a sha256 in quotes matches only an artifact's hash.
  let q = db.selectFrom('releases').select('id').where(sql.ref('artifacts'), 'like', `%"${sha256}"%`);
  if (approvedOnly) q = q.where('approved_at', 'is not', null);
  return (await q.executeTakeFirst()) !== undefined;
}

/** Inserts a new release (the caller checked it does not exist, in the same transaction). */
export async function insertRelease(
  db: Db,
  r: Omit<Release, 'id' | 'createdAt' | 'approvedAt' | 'approvedBy' | 'importedBy'> & {
    createdAt: number;
    approvedAt?: number | null;
    approvedBy?: string | null;
    importedBy?: string | null;
  },
): Promise<void> {
  const row: NewReleaseRow = {
    component: r.component,
    version: r.version,
    artifacts: encode(r.artifacts),
    provenance: encode(r.provenance),
    created_at: r.createdAt,
    approved_at: r.approvedAt ?? null,
    approved_by: r.approvedBy ?? null,
    imported_by: r.importedBy ?? null,
  };
  await db.insertInto('releases').values(row).execute();
}

/** Marks a release approved. */
export async function markReleaseApproved(db: Db, id: number, at: number, by: string): Promise<void> {
  await db.updateTable('releases').set({ approved_at: at, approved_by: by }).where('id', '=', id).execute();
}

/** Deletes a release row (release gc). */
export async function deleteRelease(db: Db, component: string, version: string): Promise<void> {
  await db.deleteFrom('releases').where('component', '=', component).where('version', '=', version).execute();
}
