// Release gc (`repo gc`): retention. Releases referenced by a rollout, a pin, a device (installed or desired) and
// the newest release of each component are kept; every other release is withdrawn (its targets removed from the
// signed metadata first, so no device is ever offered a blob that is gone) and blobs no kept release uses are
// deleted.
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TufRepository } from '../../trust/signer/tuf-repository.ts';
import { targetPath } from '../../trust/target-path.ts';
import type { BlobStore } from '../blobs.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { desiredReleaseRefs } from '../db/desired.ts';
import { installedReleaseRefs } from '../db/device-components.ts';
import { allDevicePins } from '../db/devices.ts';
import { deleteRelease, listReleases, type Release } from '../db/releases.ts';
import { rolloutReleaseRefs } from '../db/rollouts.ts';

/** What gc needs of a release. */
export type GcRelease = Pick<Release, 'component' | 'version' | 'createdAt' | 'artifacts'>;

export interface GcResult {
  kept: string[];
  dropped: string[];
  blobs_freed: number;
  bytes_freed: number;
}

/** Pure: which releases to keep (refs are "component@version"). */
export function planGc<R extends GcRelease>(
  releases: R[],
  referenced: Set<string>,
): { keep: R[]; drop: R[] } {
  const newest = new Map<string, R>();
  for (const r of releases) {
    const n = newest.get(r.component);
    if (!n || r.createdAt > n.createdAt) newest.set(r.component, r);
  }
  const keep: R[] = [];
  const drop: R[] = [];
  for (const r of releases)
    (referenced.has(`${r.component}@${r.version}`) || newest.get(r.component) === r ? keep : drop).push(r);
  return { keep, drop };
}

/** Every "component@version" something still refers to: rollouts, desired and installed versions, pins. */
async function referencedReleases(db: Db): Promise<Set<string>> {
  const referenced = new Set<string>();
  const add = (component: string, version: string | null) => {
    if (version) referenced.add(`${component}@${version}`);
  };
  for (const r of await rolloutReleaseRefs(db)) add(r.component, r.version);
  for (const r of await desiredReleaseRefs(db)) add(r.component, r.version);
  for (const r of await installedReleaseRefs(db)) add(r.component, r.version);
  for (const pins of await allDevicePins(db)) {
    for (const [c, v] of Object.entries(pins)) add(c, v);
  }
  return referenced;
}

/** Blob files no kept release uses. */
function unusedBlobs(blobs: BlobStore, live: Set<string>): string[] {
  const garbage: string[] = [];
  for (const fan of readdirSync(blobs.root)) {
    if (!/^[0-9a-f]{2}$/.test(fan)) continue;
    for (const f of readdirSync(join(blobs.root, fan))) if (!live.has(f)) garbage.push(f);
  }
  return garbage;
}

/** Collects the releases and blobs nothing needs (or, with dryRun, says which it would). */
export async function collectGarbage(
  db: Db,
  blobs: BlobStore,
  dataDir: string,
  opts: { dryRun?: boolean; now?: number } = {},
): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  const { keep, drop } = planGc(await listReleases(db), await referencedReleases(db));
  const garbage = unusedBlobs(blobs, new Set(keep.flatMap((r) => r.artifacts.map((a) => a.sha256))));
  const result: GcResult = {
    kept: keep.map((r) => `${r.component}@${r.version}`),
    dropped: drop.map((r) => `${r.component}@${r.version}`),
    blobs_freed: garbage.length,
    bytes_freed: garbage.reduce((s, h) => s + statSync(blobs.path(h)).size, 0),
  };
  if (opts.dryRun) return result;
  // 1. Withdraw from the signed targets; 2. delete the release rows (audited); 3. only then delete blobs.
  const repo = TufRepository.open(dataDir);
  if (repo?.canSign() && drop.length)
    await repo.removeTargets(
      drop.flatMap((r) => r.artifacts.map((a) => targetPath(r.component, r.version, a.name))),
      now,
    );
  await db.transaction().execute(async (tx) => {
    for (const r of drop) {
      await deleteRelease(tx, r.component, r.version);
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
