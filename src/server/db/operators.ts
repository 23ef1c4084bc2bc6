// Tables `operators` and `operator_tokens`: the people (and CI jobs) who use the admin API, each with a role
// (../roles.ts) and one or more named API tokens, stored as sha256 hashes only. Every query of both tables lives
// here; the rules (bootstrap, last admin, expiry) are in ../services/operators.ts.
import type { Generated, Insertable, Selectable } from 'kysely';
import type { Db } from './database.ts';

export interface OperatorTable {
  name: string;
  role: string; // a Role (../roles.ts); checked when read
  created_at: number;
  created_by: string;
  revoked_at: number | null;
  /** 'local' (operator add, the bootstrap) or 'oidc' (created by a single sign-on login). */
  source: Generated<string>;
}

/** Where an operator comes from. */
export type OperatorSource = 'local' | 'oidc';

export interface OperatorTokenTable {
  id: string;
  operator: string;
  name: string; // `default`, `bootstrap`, or a named API token
  token_hash: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

export type OperatorRow = Selectable<OperatorTable>;
export type OperatorTokenRow = Selectable<OperatorTokenTable>;

/** A token found by its hash, with what its operator is now. */
export interface TokenWithOperator extends OperatorTokenRow {
  role: string;
  operator_revoked_at: number | null;
}

/** Inserts an operator unless one has that name (replicas racing on a new database); true when inserted. */
export async function insertOperator(db: Db, row: Insertable<OperatorTable>): Promise<boolean> {
  const res = await db
    .insertInto('operators')
    .values(row)
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  return Number(res.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** Inserts a token unless its id or hash is taken (the bootstrap race); true when inserted. */
export async function insertOperatorToken(db: Db, row: OperatorTokenRow): Promise<boolean> {
  const res = await db
    .insertInto('operator_tokens')
    .values(row)
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  return Number(res.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** How many operators exist (revoked ones included). */
export async function countOperators(db: Db): Promise<number> {
  const row = await db
    .selectFrom('operators')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** One operator by name, or undefined. */
export async function findOperator(db: Db, name: string): Promise<OperatorRow | undefined> {
  return db.selectFrom('operators').selectAll().where('name', '=', name).executeTakeFirst();
}

/** Every operator, by name. */
export async function listOperatorRows(db: Db): Promise<OperatorRow[]> {
  return db.selectFrom('operators').selectAll().orderBy('name').execute();
}

/** Every token (hashes included: callers must not show them), by operator, then creation. */
export async function listOperatorTokenRows(db: Db): Promise<OperatorTokenRow[]> {
  return db
    .selectFrom('operator_tokens')
    .selectAll()
    .orderBy('operator')
    .orderBy('created_at')
    .orderBy('id')
    .execute();
}

/**
 * The names of the admins not revoked. `lock` (PostgreSQL) locks their rows until the transaction ends, so two
 * replicas cannot each revoke or demote one of the last two admins at the same moment.
 */
export async function liveAdminNames(db: Db, lock: boolean): Promise<string[]> {
  let q = db
    .selectFrom('operators')
    .select('name')
    .where('role', '=', 'admin')
    .where('revoked_at', 'is', null)
    .orderBy('name');
  if (lock) q = q.forUpdate();
  return (await q.execute()).map((r) => r.name);
}

/** Sets an operator's role. */
export async function setOperatorRole(db: Db, name: string, role: string): Promise<void> {
  await db.updateTable('operators').set({ role }).where('name', '=', name).execute();
}

/** Marks an operator revoked (once) and revokes its live tokens. */
export async function revokeOperatorRow(db: Db, name: string, now: number): Promise<void> {
  await db
    .updateTable('operators')
    .set({ revoked_at: now })
    .where('name', '=', name)
    .where('revoked_at', 'is', null)
    .execute();
  await db
    .updateTable('operator_tokens')
    .set({ revoked_at: now })
    .where('operator', '=', name)
    .where('revoked_at', 'is', null)
    .execute();
}

/** A token by its hash, with its operator's role and revocation, or undefined. */
export async function operatorTokenByHash(db: Db, hash: string): Promise<TokenWithOperator | undefined> {
  return db
    .selectFrom('operator_tokens as t')
    .innerJoin('operators as o', 'o.name', 't.operator')
    .selectAll('t')
    .select(['o.role as role', 'o.revoked_at as operator_revoked_at'])
    .where('t.token_hash', '=', hash)
    .executeTakeFirst();
}

/** The operator's token of that name that is not revoked, or undefined. */
export async function liveOperatorToken(
  db: Db,
  operator: string,
  name: string,
): Promise<OperatorTokenRow | undefined> {
  return db
    .selectFrom('operator_tokens')
    .selectAll()
    .where('operator', '=', operator)
    .where('name', '=', name)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
}

/**
 * How many working admin tokens never expire (of admins not revoked, not revoked themselves), leaving out one
 * token or one operator's: what keeps somebody able to manage operators.
 */
export async function usableAdminTokens(
  db: Db,
  except: { exceptToken?: string; exceptOperator?: string },
): Promise<number> {
  let q = db
    .selectFrom('operator_tokens as t')
    .innerJoin('operators as o', 'o.name', 't.operator')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('o.role', '=', 'admin')
    .where('o.revoked_at', 'is', null)
    .where('t.revoked_at', 'is', null)
    // Only tokens that never expire count: one that expires would lock everybody out when it does.
    .where('t.expires_at', 'is', null);
  if (except.exceptToken) q = q.where('t.id', '!=', except.exceptToken);
  if (except.exceptOperator) q = q.where('o.name', '!=', except.exceptOperator);
  const row = await q.executeTakeFirstOrThrow();
  return Number(row.n);
}

/** A live (not revoked) token by its row id. */
export async function liveOperatorTokenById(db: Db, id: string): Promise<OperatorTokenRow | undefined> {
  return db
    .selectFrom('operator_tokens')
    .selectAll()
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
}

/** Revokes one token (once); true when it was live. */
export async function revokeOperatorTokenRow(db: Db, id: string, now: number): Promise<boolean> {
  const res = await db
    .updateTable('operator_tokens')
    .set({ revoked_at: now })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

/**
 * Records that a token was used, at most once a `resolutionMs` (a write per request would make every read of
 * the admin API a write).
 */
export async function touchOperatorToken(
  db: Db,
  id: string,
  now: number,
  resolutionMs: number,
): Promise<void> {
  await db
    .updateTable('operator_tokens')
    .set({ last_used_at: now })
    .where('id', '=', id)
    .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', now - resolutionMs)]))
    .execute();
}
