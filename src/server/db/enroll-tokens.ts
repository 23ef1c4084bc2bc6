// Table `enroll_tokens`: enrollment tokens (stored as hashes), single- or multi-use, with expiry and revocation.
import type { Selectable } from 'kysely';
import type { Labels } from '../../protocol/device.ts';
import type { Db } from './database.ts';
import { decode, encode, type Json } from './json.ts';

export interface EnrollTokenTable {
  id: string;
  token_hash: string;
  uses_left: number | null; // null = unlimited
  expires_at: number | null;
  labels: Json<Labels>; // labels added to devices enrolled with this token
  created_at: number;
  revoked: 0 | 1;
}

/** An enrollment token as the server uses it. */
export interface EnrollToken {
  id: string;
  usesLeft: number | null;
  expiresAt: number | null;
  labels: Labels;
  revoked: boolean;
}

/** Maps an `enroll_tokens` row. */
export function toEnrollToken(r: Selectable<EnrollTokenTable>): EnrollToken {
  return {
    id: r.id,
    usesLeft: r.uses_left,
    expiresAt: r.expires_at,
    labels: decode(r.labels),
    revoked: r.revoked === 1,
  };
}

/** True when the token may enroll a device at `now` (known, not revoked, not expired, uses left). */
export function tokenUsable(t: EnrollToken | undefined, now: number): t is EnrollToken {
  return t !== undefined && !t.revoked && (t.expiresAt === null || t.expiresAt >= now) && t.usesLeft !== 0;
}

/** The token with this hash, if any. */
export async function tokenByHash(db: Db, hash: string): Promise<EnrollToken | undefined> {
  const row = await db
    .selectFrom('enroll_tokens')
    .selectAll()
    .where('token_hash', '=', hash)
    .executeTakeFirst();
  return row && toEnrollToken(row);
}

/** Spends one use of a limited token. */
export async function spendUse(db: Db, t: EnrollToken): Promise<void> {
  if (t.usesLeft !== null)
    await db
      .updateTable('enroll_tokens')
      .set({ uses_left: t.usesLeft - 1 })
      .where('id', '=', t.id)
      .execute();
}

/** Stores a new token. */
export async function insertToken(
  db: Db,
  t: { id: string; hash: string; uses: number | null; expiresAt: number | null; labels: Labels; now: number },
): Promise<void> {
  await db
    .insertInto('enroll_tokens')
    .values({
      id: t.id,
      token_hash: t.hash,
      uses_left: t.uses,
      expires_at: t.expiresAt,
      labels: encode(t.labels),
      created_at: t.now,
      revoked: 0,
    })
    .execute();
}

/** Revokes a token; false when there is none with this id. */
export async function revokeToken(db: Db, id: string): Promise<boolean> {
  const res = await db
    .updateTable('enroll_tokens')
    .set({ revoked: 1 })
    .where('id', '=', id)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}
