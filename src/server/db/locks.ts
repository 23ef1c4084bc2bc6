// Locks that hold across server replicas on one PostgreSQL (advisory locks). On SQLite there is one server
// process per database, and the in-process serialisation of each caller is enough.
import { sql } from 'kysely';
import type { Store } from './database.ts';

/** Advisory-lock keys: one per resource that replicas must never write at the same time. */
export const LOCK_KEYS = {
  /** The organisation's TUF repository (approval, gc withdrawal, re-signing the timestamp). */
  trustRepository: 0x52_46_54_55, // "RFTU"
} as const;

/** How long a writer waits for a lock another replica holds before giving up with an error. */
const LOCK_WAIT_MS = 60_000;
/** Between tries: short at first, then at most this long. */
const MAX_RETRY_MS = 500;

/**
 * Runs `fn` holding PostgreSQL's session advisory lock `key` on a connection of its own (released at the end,
 * or by the database when this process dies). A lock held by a replica that is alive but stuck fails the caller
 * after LOCK_WAIT_MS with a clear error instead of blocking it for ever. On SQLite, runs `fn` as it is.
 */
export async function withSharedLock<T>(store: Store, key: number, fn: () => Promise<T>): Promise<T> {
  if (store.dialect !== 'postgres') return fn();
  return store.db.connection().execute(async (conn) => {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let wait = 10; ; wait = Math.min(MAX_RETRY_MS, wait * 2)) {
      const { rows } = await sql<{ ok: boolean }>`select pg_try_advisory_lock(${key}) as ok`.execute(conn);
      if (rows[0]?.ok) break;
      if (Date.now() + wait > deadline)
        throw new Error(
          `another server replica has held the lock ${key} for over ${LOCK_WAIT_MS / 1000} s; try again, or restart the stuck replica`,
        );
      await new Promise((r) => setTimeout(r, wait));
    }
    try {
      return await fn();
    } finally {
      await sql`select pg_advisory_unlock(${key})`.execute(conn);
    }
  });
}
