// Tables `lock_groups` and `lock_holders`: the reboot semaphore (FleetLock, issue 14). A group has a number of
// slots and a lease; a holder that does not reach steady state within its lease loses its slot. Every query of
// both tables lives here; the rules are in ../services/fleet-lock-rules.ts and ../services/fleet-lock.ts.
import type { Selectable } from 'kysely';
import type { Db } from './database.ts';

export interface LockGroupTable {
  name: string;
  slots: number;
  lease_ms: number;
  updated_at: number;
  updated_by: string;
}

export interface LockHolderTable {
  group_name: string;
  holder_id: string;
  acquired_at: number;
  expires_at: number;
}

export type LockGroup = Selectable<LockGroupTable>;
export type LockHolder = Selectable<LockHolderTable>;

export type { Db };

/**
 * One group, or undefined. `forUpdate` (PostgreSQL only: SQLite has no row locks, its write transaction already
 * serialises) holds the group row until the transaction ends, so replicas take the group's slots one at a time.
 */
export async function lockGroup(db: Db, name: string, forUpdate: boolean): Promise<LockGroup | undefined> {
  let q = db.selectFrom('lock_groups').selectAll().where('name', '=', name);
  if (forUpdate) q = q.forUpdate();
  return q.executeTakeFirst();
}

/** Every group, by name. */
export async function lockGroups(db: Db): Promise<LockGroup[]> {
  return db.selectFrom('lock_groups').selectAll().orderBy('name').execute();
}

/** Creates the group unless it exists (a replica racing to create it too is no error). */
export async function insertLockGroupIfAbsent(db: Db, g: LockGroup): Promise<void> {
  await db
    .insertInto('lock_groups')
    .values(g)
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
}

/** Creates or changes a group. */
export async function upsertLockGroup(db: Db, g: LockGroup): Promise<void> {
  await db
    .insertInto('lock_groups')
    .values(g)
    .onConflict((oc) =>
      oc.column('name').doUpdateSet({
        slots: g.slots,
        lease_ms: g.lease_ms,
        updated_at: g.updated_at,
        updated_by: g.updated_by,
      }),
    )
    .execute();
}

/** The holders of one group (or of every group), oldest first, expired or not. */
export async function lockHolders(db: Db, group?: string): Promise<LockHolder[]> {
  let q = db.selectFrom('lock_holders').selectAll();
  if (group !== undefined) q = q.where('group_name', '=', group);
  return q.orderBy('group_name').orderBy('acquired_at').orderBy('holder_id').execute();
}

export async function insertLockHolder(db: Db, h: LockHolder): Promise<void> {
  await db.insertInto('lock_holders').values(h).execute();
}

/** Deletes one holder; false when it held no slot (or another replica deleted it first). */
export async function deleteLockHolder(db: Db, group: string, id: string): Promise<boolean> {
  const r = await db
    .deleteFrom('lock_holders')
    .where('group_name', '=', group)
    .where('holder_id', '=', id)
    .executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/**
 * Deletes every holder whose lease ended at `now` and returns them. A row another replica deleted first is not
 * returned here, so each expiry is audited once.
 */
export async function deleteExpiredLockHolders(db: Db, now: number): Promise<LockHolder[]> {
  return db.deleteFrom('lock_holders').where('expires_at', '<=', now).returningAll().execute();
}

/**
 * Holders per group, for the `ringfence_lock_holders{group}` gauge: every group (0 when nobody holds a slot).
 * With `now`, holders whose lease ended are not counted even before the sweep deletes them.
 */
export async function lockHoldersByGroup(
  db: Db,
  now?: number,
): Promise<Array<{ group: string; holders: number }>> {
  const [groups, holders] = await Promise.all([lockGroups(db), lockHolders(db)]);
  const count = new Map<string, number>(groups.map((g) => [g.name, 0]));
  for (const h of holders)
    if (now === undefined || h.expires_at > now) count.set(h.group_name, (count.get(h.group_name) ?? 0) + 1);
  return [...count].map(([group, n]) => ({ group, holders: n }));
}
