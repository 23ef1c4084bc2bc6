// `repo gc`: retention. Releases referenced by a rollout, a pin, a device (installed or desired) and the newest
// release of each component are kept; every other release is withdrawn (its targets removed from the signed
// metadata first, so no device is ever offered a blob that is gone) and blobs no kept release uses are deleted.
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { BlobStore } from '../server/blobs.ts';
import { appendAudit } from '../server/db/audit.ts';
import type { Db } from '../server/db/database.ts';
import { Repository, targetPath } from './repository.ts';

export interface GcRelease {
  component: string;
  version: string;
  created_at: number;
  artifacts: Array<{ name: string; sha256: string; length: number }>;
}

/** Pure: which releases to keep (refs are "component@version"). */
export function planGc(
  releases: GcRelease[],
  referenced: Set<string>,
): { keep: GcRelease[]; drop: GcRelease[] } {
  const newest = new Map<string, GcRelease>();
  for (const r of releases) {
    const n = newest.get(r.component);
    if (!n || r.created_at > n.created_at) newest.set(r.component, r);
  }
  const keep: GcRelease[] = [];
  const drop: GcRelease[] = [];
  for (const r of releases)
    (referenced.has(`${r.component}@${r.version}`) || newest.get(r.component) === r ? keep : drop).push(r);
  return { keep, drop };
}

export async function collectGarbage(
  db: Db,
  blobs: BlobStore,
  dataDir: string,
  opts: { dryRun?: boolean; now?: number } = {},
): Promise<{ kept: string[]; dropped: string[]; blobs_freed: number; bytes_freed: number }> {
  const now = opts.now ?? Date.now();
  const rows = await db
    .selectFrom('releases')
    .select(['component', 'version', 'created_at', 'artifacts'])
    .execute();
  const releases: GcRelease[] = rows.map((r) => ({ ...r, artifacts: JSON.parse(r.artifacts) }));
  const referenced = new Set<string>();
  for (const r of await db.selectFrom('rollouts').select(['component', 'version']).execute())
    referenced.add(`${r.component}@${r.version}`);
  for (const r of await db.selectFrom('desired').select(['component', 'version']).execute())
    referenced.add(`${r.component}@${r.version}`);
  for (const r of await db.selectFrom('device_components').select(['component', 'version']).execute())
    if (r.version) referenced.add(`${r.component}@${r.version}`);
  for (const d of await db.selectFrom('devices').select('pins').execute())
    for (const [c, v] of Object.entries(JSON.parse(d.pins) as Record<string, string>))
      referenced.add(`${c}@${v}`);
  const { keep, drop } = planGc(releases, referenced);
  const live = new Set(keep.flatMap((r) => r.artifacts.map((a) => a.sha256)));
  const garbage: string[] = [];
  for (const fan of readdirSync(blobs.root)) {
    if (!/^[0-9a-f]{2}$/.test(fan)) continue;
    for (const f of readdirSync(join(blobs.root, fan))) if (!live.has(f)) garbage.push(f);
  }
  const bytes = garbage.reduce((s, h) => s + statSync(blobs.path(h)).size, 0);
  const result = {
    kept: keep.map((r) => `${r.component}@${r.version}`),
    dropped: drop.map((r) => `${r.component}@${r.version}`),
    blobs_freed: garbage.length,
    bytes_freed: bytes,
  };
  if (opts.dryRun) return result;
  // 1. Withdraw from the signed targets; 2. delete the release rows (audited); 3. only then delete blobs.
  const repo = Repository.open(dataDir);
  if (repo?.canSign() && drop.length)
    await repo.removeTargets(
      drop.flatMap((r) => r.artifacts.map((a) => targetPath(r.component, r.version, a.name))),
      now,
    );
  await db.transaction().execute(async (tx) => {
    for (const r of drop) {
      await tx
        .deleteFrom('releases')
        .where('component', '=', r.component)
        .where('version', '=', r.version)
        .execute();
      await appendAudit(tx, {
        at: now,
        actor: 'gc',
        action: 'release.collected',
        subject: `release/${r.component}@${r.version}`,
        detail: { artifacts: r.artifacts },
      });
    }
  });
  for (const h of garbage) unlinkSync(blobs.path(h));
  return result;
}
