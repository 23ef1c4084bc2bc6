// Operators: who may use the admin API, with which role (../roles.ts), through which tokens. The first start of a
// new server creates operator `admin` with the token `bootstrap` (shown once); admins add, revoke, rotate and
// re-role operators; an operator may hold named API tokens (for CI jobs) with an expiry. Nothing about token
// validity is cached: a revoked, rotated or expired token is refused from the very next request, on every replica.
// Every change is audited with the caller as actor; no audit entry holds a token or a hash.
import { randomUUID } from 'node:crypto';
import { appendAudit } from '../db/audit.ts';
import type { Db, Store } from '../db/database.ts';
import {
  countOperators,
  findOperator,
  insertOperator,
  insertOperatorToken,
  listOperatorRows,
  listOperatorTokenRows,
  liveAdminNames,
  liveOperatorToken,
  liveOperatorTokenById,
  type OperatorRow,
  type OperatorTokenRow,
  operatorTokenByHash,
  revokeOperatorRow,
  revokeOperatorTokenRow,
  setOperatorRole,
  touchOperatorToken,
  usableAdminTokens,
} from '../db/operators.ts';
import { badRequest, conflict, forbidden, notFound } from '../errors.ts';
import type { RequestOperator } from '../operator-request.ts';
import { asRole, type Role } from '../roles.ts';
import { hashToken, newToken } from '../tokens.ts';
import {
  actorOf,
  BOOTSTRAP,
  checkName,
  LAST_USED_RESOLUTION_MS,
  refuseReserved,
  roleOrRefuse,
  SERVER_TOKEN_NAMES,
  weakTokenReason,
} from './operator-names.ts';

/** What authentication found: the operator, or why the token is refused (401). */
export type Authentication = { ok: true; operator: RequestOperator } | { ok: false; reason: string };

/** A token as listed (never its hash). */
export interface TokenView {
  name: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

/** An operator as listed. */
export interface OperatorView {
  name: string;
  role: string;
  created_at: number;
  created_by: string;
  revoked_at: number | null;
  tokens: TokenView[];
}

export class Operators {
  private constructor(
    private readonly store: Store,
    private readonly clock: () => number,
  ) {}

  /**
   * Opens the operators, creating operator `admin` with token `bootstrap` when there is no operator yet.
   * `initial` (automation: RINGFENCE_INITIAL_ADMIN_TOKEN) is used instead of a random token and must be strong.
   * Returns the new token only when it was generated here and stored, so it is shown exactly once.
   */
  static async open(
    store: Store,
    clock: () => number,
    initial?: string | null,
  ): Promise<{ operators: Operators; generated: string | null; fromInitial: boolean }> {
    const operators = new Operators(store, clock);
    if ((await countOperators(store.db)) > 0) return { operators, generated: null, fromInitial: false };
    // null: the caller has nowhere to deliver a first token (a token file that exists in a read-only folder).
    // Storing one nobody can see would lock every operator out of a new database.
    if (initial === null)
      throw new Error('this database has no operator yet, and the first admin token cannot be delivered');
    if (initial !== undefined) {
      const weak = weakTokenReason(initial);
      if (weak) throw new Error(`RINGFENCE_INITIAL_ADMIN_TOKEN ${weak}`);
    }
    const token = initial ?? newToken('adm');
    const hash = hashToken(token);
    const now = clock();
    // Replicas started together on a new database race here: the inserts do nothing when another replica's
    // row exists (PostgreSQL makes the loser wait for the winner's commit), so exactly one bootstrap token is
    // stored. A replica whose token lost shows nothing; the winner shows its own once.
    await store.db.transaction().execute(async (tx) => {
      await insertOperator(tx, {
        name: BOOTSTRAP.operator,
        role: 'admin',
        created_at: now,
        created_by: 'server',
        revoked_at: null,
      });
      await insertOperatorToken(tx, tokenRow(BOOTSTRAP.id, BOOTSTRAP.operator, BOOTSTRAP.token, hash, now));
    });
    const won = (await operatorTokenByHash(store.db, hash))?.id === BOOTSTRAP.id;
    return {
      operators,
      generated: initial === undefined && won ? token : null,
      fromInitial: initial !== undefined && won,
    };
  }

  /** Who presents `token`, or why it is refused. Reads the database every time (no cache of validity). */
  async authenticate(token: string | null): Promise<Authentication> {
    if (!token) return { ok: false, reason: 'admin token required' };
    const row = await operatorTokenByHash(this.store.db, hashToken(token));
    if (!row) return { ok: false, reason: 'admin token required' };
    const now = this.clock();
    if (row.operator_revoked_at !== null) return { ok: false, reason: 'operator revoked' };
    if (row.revoked_at !== null) return { ok: false, reason: 'token revoked' };
    if (row.expires_at !== null && row.expires_at <= now) return { ok: false, reason: 'token expired' };
    const role = asRole(row.role);
    if (!role) return { ok: false, reason: `operator ${row.operator} has an unknown role` };
    await touchOperatorToken(this.store.db, row.id, now, LAST_USED_RESOLUTION_MS);
    return {
      ok: true,
      operator: {
        name: row.operator,
        role,
        token: row.name,
        actor: actorOf(row.operator, row.name),
        tokenId: row.id,
        expiresAt: row.expires_at,
      },
    };
  }

  /** True when `token` is a working operator token (any role: the blob download of device.ts). */
  async matches(token: string | null): Promise<boolean> {
    return (await this.authenticate(token)).ok;
  }

  /** Every operator with its tokens (never their hashes). */
  async list(): Promise<OperatorView[]> {
    const { db } = this.store;
    const [ops, tokens] = await Promise.all([listOperatorRows(db), listOperatorTokenRows(db)]);
    return ops.map((o) => ({
      name: o.name,
      role: o.role,
      created_at: o.created_at,
      created_by: o.created_by,
      revoked_at: o.revoked_at,
      tokens: tokens
        .filter((t) => t.operator === o.name)
        .map((t) => ({
          name: t.name,
          created_at: t.created_at,
          expires_at: t.expires_at,
          revoked_at: t.revoked_at,
          last_used_at: t.last_used_at,
        })),
    }));
  }

  /** Adds an operator with its token `default` (returned once); 409 when the name exists. */
  async add(actor: string, name: string, role: string): Promise<{ name: string; role: Role; token: string }> {
    checkName('operator', name);
    refuseReserved(name);
    const r = roleOrRefuse(role);
    const token = newToken('op');
    await this.change(async (tx, now) => {
      const added = await insertOperator(tx, {
        name,
        role: r,
        created_at: now,
        created_by: actor,
        revoked_at: null,
      });
      if (!added) throw conflict(`operator ${name} exists`);
      await insertOperatorToken(tx, tokenRow(newId(), name, 'default', hashToken(token), now));
      await audit(tx, now, actor, 'operator.added', name, { role: r });
    });
    return { name, role: r, token };
  }

  /** Revokes an operator: all its tokens are refused from the next request. The last admin is kept (409). */
  async revoke(actor: string, name: string): Promise<{ name: string; revoked_at: number }> {
    return this.change(async (tx, now) => {
      const op = await operatorOr404(tx, name);
      if (op.revoked_at !== null) return { name, revoked_at: op.revoked_at };
      await this.keepAnAdmin(tx, op, 'revoked');
      await revokeOperatorRow(tx, name, now);
      await audit(tx, now, actor, 'operator.revoked', name, {});
      return { name, revoked_at: now };
    });
  }

  /**
   * Replaces an operator's token `default` (`bootstrap` when it has no `default`): the old one is refused from
   * the next request, the new one is returned once.
   */
  async rotate(actor: string, name: string): Promise<{ name: string; token: string }> {
    return this.change(async (tx, now) => {
      const op = await liveOperatorOr409(tx, name);
      const old =
        (await liveOperatorToken(tx, op.name, 'default')) ??
        (await liveOperatorToken(tx, op.name, 'bootstrap'));
      const token = await replaceToken(tx, now, op.name, old?.name ?? 'default', old);
      await audit(tx, now, actor, 'operator.rotated', name, { token_name: old?.name ?? 'default' });
      return { name, token };
    });
  }

  /** Replaces the token the caller used (any role may rotate its own); keeps its name and expiry. */
  async rotateOwn(caller: RequestOperator): Promise<{ token: string }> {
    return this.change(async (tx, now) => {
      const old = await liveOperatorTokenById(tx, caller.tokenId);
      if (!old) throw conflict(`token ${caller.token} of operator ${caller.name} is no longer live`);
      const token = await replaceToken(tx, now, caller.name, old.name, old);
      await audit(tx, now, caller.actor, 'admin.token-rotated', caller.name, { token_name: old.name });
      return { token };
    });
  }

  /** Changes an operator's role; the last admin is not demoted (409). */
  async setRole(actor: string, name: string, role: string): Promise<{ name: string; role: Role }> {
    const r = roleOrRefuse(role);
    return this.change(async (tx, now) => {
      const op = await liveOperatorOr409(tx, name);
      if (op.role === r) return { name, role: r };
      if (r !== 'admin') await this.keepAnAdmin(tx, op, 'demoted');
      await setOperatorRole(tx, name, r);
      await audit(tx, now, actor, 'operator.role-changed', name, { from: op.role, to: r });
      return { name, role: r };
    });
  }

  /** Adds a named API token (returned once), optionally expiring; 409 when a live one has that name. */
  async addToken(
    actor: string,
    operator: string,
    tokenName: string,
    expiresInS?: number,
    /** The expiry of the token the request used, when an operator adds a token for itself: never outlived. */
    notAfter: number | null = null,
  ): Promise<{ operator: string; name: string; token: string; expires_at: number | null }> {
    checkName('token', tokenName);
    if (SERVER_TOKEN_NAMES.has(tokenName))
      throw badRequest(`token name ${tokenName} is the server's own; pick another`);
    const token = newToken('op');
    return this.change(async (tx, now) => {
      await liveOperatorOr409(tx, operator);
      if (await liveOperatorToken(tx, operator, tokenName))
        throw conflict(`operator ${operator} already has a token named ${tokenName}`);
      // A short-lived token (a CI job's, a single sign-on session) cannot mint a longer-lived one.
      const asked = expiresInS ? now + expiresInS * 1000 : null;
      const expires = notAfter === null ? asked : Math.min(asked ?? notAfter, notAfter);
      await insertOperatorToken(tx, {
        ...tokenRow(newId(), operator, tokenName, hashToken(token), now),
        expires_at: expires,
      });
      await audit(tx, now, actor, 'operator.token-added', operator, {
        token_name: tokenName,
        expires_at: expires,
      });
      return { operator, name: tokenName, token, expires_at: expires };
    });
  }

  /** Revokes one named token; the last working admin token is kept (409). */
  async revokeToken(
    actor: string,
    operator: string,
    tokenName: string,
  ): Promise<{ operator: string; name: string; revoked_at: number }> {
    return this.change(async (tx, now) => {
      const op = await operatorOr404(tx, operator);
      const t = await liveOperatorToken(tx, operator, tokenName);
      if (!t) throw notFound(`operator ${operator} has no live token named ${tokenName}`);
      if (op.role === 'admin' && op.revoked_at === null) {
        await liveAdminNames(tx, this.store.dialect === 'postgres');
        if ((await usableAdminTokens(tx, { exceptToken: t.id })) === 0)
          throw conflict(
            `token ${tokenName} is the last admin token that does not expire: add another admin or token first`,
          );
      }
      await revokeOperatorTokenRow(tx, t.id, now);
      await audit(tx, now, actor, 'operator.token-revoked', operator, { token_name: tokenName });
      return { operator, name: tokenName, revoked_at: now };
    });
  }

  /**
   * A single sign-on login (../oidc/): creates operator `name` (source oidc) on first login, else sets the role
   * the claims map to; refuses a local operator's name and a revoked operator (403). Issues a new token named
   * `oidc` expiring after `sessionHours` (one row per session) and audits `operator.login` as `NAME/oidc`.
   */
  async loginFromIdp(login: {
    name: string;
    role: Role;
    issuer: string;
    subject: string;
    sessionHours: number;
  }): Promise<{ name: string; role: Role; token: string; expires_at: number }> {
    const { name, role } = login;
    checkName('operator', name);
    const token = newToken('op');
    return this.change(async (tx, now) => {
      const op = await findOperator(tx, name);
      if (op && op.source !== 'oidc')
        throw forbidden(`operator ${name} exists locally; SSO may not take it over`);
      if (op?.revoked_at != null) throw forbidden(`operator ${name} is revoked`);
      if (!op) {
        refuseReserved(name);
        const row = { name, role, created_at: now, created_by: 'oidc', revoked_at: null, source: 'oidc' };
        // Someone else created the name meanwhile (insert did nothing): refused rather than joined blindly.
        if (!(await insertOperator(tx, row)))
          throw conflict(`operator ${name} was created meanwhile; sign in again`);
        await audit(tx, now, 'oidc', 'operator.added', name, { role, source: 'oidc', issuer: login.issuer });
      } else if (op.role !== role) {
        if (role !== 'admin') await this.keepAnAdmin(tx, op, 'demoted');
        await setOperatorRole(tx, name, role);
        await audit(tx, now, 'oidc', 'operator.role-changed', name, { from: op.role, to: role });
      }
      const expires = now + login.sessionHours * 3_600_000;
      await insertOperatorToken(tx, {
        ...tokenRow(newId(), name, 'oidc', hashToken(token), now),
        expires_at: expires,
      });
      await audit(tx, now, actorOf(name, 'oidc'), 'operator.login', name, {
        issuer: login.issuer,
        subject: login.subject,
        role,
      });
      return { name, role, token, expires_at: expires };
    });
  }

  /**
   * Refuses (409) to revoke or demote an admin when no other admin would keep a working token that never
   * expires: otherwise the last way in could be revoked, demoted or simply expire, and nobody could manage
   * operators again.
   */
  private async keepAnAdmin(tx: Db, op: OperatorRow, what: 'revoked' | 'demoted'): Promise<void> {
    if (op.role !== 'admin') return;
    // Locked on PostgreSQL: a concurrent change of another admin waits for this transaction, then sees it.
    await liveAdminNames(tx, this.store.dialect === 'postgres');
    if ((await usableAdminTokens(tx, { exceptOperator: op.name })) === 0)
      throw conflict(
        `operator ${op.name} is the last admin with a token that does not expire and may not be ${what}: add another admin first`,
      );
  }

  /** Runs one audited change in a transaction at the clock's now. */
  private change<T>(fn: (tx: Db, now: number) => Promise<T>): Promise<T> {
    const now = this.clock();
    return this.store.db.transaction().execute((tx) => fn(tx, now));
  }
}

function newId(): string {
  return `tok-${randomUUID()}`;
}

function tokenRow(id: string, operator: string, name: string, hash: string, now: number): OperatorTokenRow {
  return {
    id,
    operator,
    name,
    token_hash: hash,
    created_at: now,
    expires_at: null,
    revoked_at: null,
    last_used_at: null,
  };
}

/** Revokes `old` (when given) and stores a new token named `name` with its expiry; returns the new token. */
async function replaceToken(
  tx: Db,
  now: number,
  operator: string,
  name: string,
  old: OperatorTokenRow | undefined,
): Promise<string> {
  // The bootstrap token keeps its prefix: it is still the server's first admin token.
  const token = newToken(name === BOOTSTRAP.token ? 'adm' : 'op');
  if (old) await revokeOperatorTokenRow(tx, old.id, now);
  await insertOperatorToken(tx, {
    ...tokenRow(newId(), operator, name, hashToken(token), now),
    expires_at: old?.expires_at ?? null,
  });
  return token;
}

async function operatorOr404(tx: Db, name: string): Promise<OperatorRow> {
  const op = await findOperator(tx, name);
  if (!op) throw notFound(`no operator ${name}`);
  return op;
}

async function liveOperatorOr409(tx: Db, name: string): Promise<OperatorRow> {
  const op = await operatorOr404(tx, name);
  if (op.revoked_at !== null) throw conflict(`operator ${name} is revoked`);
  return op;
}

function audit(tx: Db, at: number, actor: string, action: string, name: string, detail: object) {
  return appendAudit(tx, { at, actor, action, subject: `operator/${name}`, detail });
}
