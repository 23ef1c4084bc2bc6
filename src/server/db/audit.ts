// Append-only, hash-chained audit log: each entry's hash covers the previous hash, so any edit breaks the chain.
import { createHash } from 'node:crypto';
import { type Generated, type Selectable, sql } from 'kysely';
import type { Db } from './database.ts';
import { decode, encode, type Json } from './json.ts';

/** Table `audit`. */
export interface AuditTable {
  seq: Generated<number>;
  at: number;
  actor: string;
  action: string;
  subject: string;
  detail: Json<unknown>; // hashed as stored: the text, not a re-encoding
  prev_hash: string;
  hash: string;
}

export type AuditRow = Selectable<AuditTable>;

/** An audit entry with its detail decoded. */
export interface AuditEntry {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string;
  detail: unknown;
  prev_hash: string;
  hash: string;
}

const GENESIS = '0'.repeat(64);

function entryHash(
  prev: string,
  e: { at: number; actor: string; action: string; subject: string; detail: string },
): string {
  return createHash('sha256')
    .update(JSON.stringify([prev, e.at, e.actor, e.action, e.subject, e.detail]))
    .digest('hex');
}

/** Appends an entry; call inside the transaction that makes the change it records. */
export async function appendAudit(
  db: Db,
  e: { at: number; actor: string; action: string; subject: string; detail?: unknown },
): Promise<void> {
  const last = await db.selectFrom('audit').select('hash').orderBy('seq', 'desc').limit(1).executeTakeFirst();
  const prev = last?.hash ?? GENESIS;
  const detail = encode(e.detail ?? {});
  const row = { at: e.at, actor: e.actor, action: e.action, subject: e.subject, detail };
  await db
    .insertInto('audit')
    .values({ ...row, prev_hash: prev, hash: entryHash(prev, row) })
    .execute();
}

/**
 * Lists entries, newest last. `actor` NAME matches the actor `NAME` and `NAME/…` (an operator through any of its
 * tokens, or `device` for every device).
 */
export async function listAudit(
  db: Db,
  opts: { limit?: number; subject?: string; actor?: string } = {},
): Promise<AuditEntry[]> {
  let q = db
    .selectFrom('audit')
    .selectAll()
    .orderBy('seq', 'desc')
    .limit(opts.limit ?? 100);
  if (opts.subject) q = q.where('subject', '=', opts.subject);
  const { actor } = opts;
  // A prefix compared with substr, not LIKE: `_` is allowed in names and is a LIKE wildcard.
  if (actor)
    q = q.where((eb) =>
      eb.or([
        eb('actor', '=', actor),
        eb(sql<string>`substr(actor, 1, ${actor.length + 1})`, '=', `${actor}/`),
      ]),
    );
  const rows = await q.execute();
  return rows.reverse().map((r) => ({ ...r, detail: decode(r.detail) }));
}

/** Walks the whole chain; returns the first broken sequence number, or null when intact. */
export async function verifyAudit(db: Db): Promise<{ entries: number; brokenAt: number | null }> {
  const rows = await db.selectFrom('audit').selectAll().orderBy('seq', 'asc').execute();
  let prev = GENESIS;
  for (const r of rows) {
    if (r.prev_hash !== prev || entryHash(prev, r) !== r.hash)
      return { entries: rows.length, brokenAt: r.seq };
    prev = r.hash;
  }
  return { entries: rows.length, brokenAt: null };
}
