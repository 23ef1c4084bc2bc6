// Table `meta`: key/value settings of the server (the admin token's hash, …). Every query of the table lives here.
import type { Db } from './database.ts';

export interface MetaTable {
  key: string;
  value: string;
}

/** The value of a setting, or null. */
export async function getMeta(db: Db, key: string): Promise<string | null> {
  const row = await db.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst();
  return row?.value ?? null;
}

/** Sets a setting only when it has none yet (first start; concurrent replicas: the first one wins). */
export async function initMeta(db: Db, key: string, value: string): Promise<void> {
  await db
    .insertInto('meta')
    .values({ key, value })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
}

/** Replaces a setting's value. */
export async function setMeta(db: Db, key: string, value: string): Promise<void> {
  await db.updateTable('meta').set({ value }).where('key', '=', key).execute();
}
