// The admin token: created on first start (shown once), stored only as a hash, rotated on demand.
import { appendAudit } from './db/audit.ts';
import type { Store } from './db/database.ts';
import { getMeta, initMeta, setMeta } from './db/meta.ts';
import { hashToken, newToken, tokenMatches } from './tokens.ts';

const KEY = 'admin_token_hash';
/** Other replicas see a rotation within this time (each caches the stored hash this long). */
const CACHE_MS = 2000;

/** Refuses tokens an attacker could guess: at least 32 characters, and not a short pattern repeated. */
function weakTokenReason(token: string): string | null {
  if (token.length < 32) return `is ${token.length} characters; at least 32 are required`;
  if (new Set(token).size < 12) return 'repeats too few different characters to be random';
  if (/\s/.test(token)) return 'contains white space';
  return null;
}

export class AdminToken {
  private cached: { hash: string; at: number } | null = null;

  private constructor(
    private readonly store: Store,
    private readonly clock: () => number,
  ) {}

  /**
   * Opens the admin token, creating it on first start. `initial` (automation) is used instead of a random token
   * and must be strong. Returns the new token only when it was generated here, so it is shown exactly once.
   */
  static async open(
    store: Store,
    clock: () => number,
    initial?: string,
  ): Promise<{ admin: AdminToken; generated: string | null; fromInitial: boolean }> {
    const admin = new AdminToken(store, clock);
    if (await admin.storedHash()) return { admin, generated: null, fromInitial: false };
    if (initial !== undefined) {
      const weak = weakTokenReason(initial);
      if (weak) throw new Error(`RINGFENCE_INITIAL_ADMIN_TOKEN ${weak}`);
    }
    const token = initial ?? newToken('adm');
    await initMeta(store.db, KEY, hashToken(token));
    admin.cached = null;
    // Replicas started together on a new database race to create the token: only the one stored counts, so
    // a replica whose token lost shows nothing (the winner shows its own once).
    const won = (await admin.storedHash()) === hashToken(token);
    return {
      admin,
      generated: initial === undefined && won ? token : null,
      fromInitial: initial !== undefined && won,
    };
  }

  private async storedHash(): Promise<string | null> {
    const now = this.clock();
    if (this.cached && now - this.cached.at < CACHE_MS) return this.cached.hash;
    const hash = await getMeta(this.store.db, KEY);
    if (hash === null) return null;
    this.cached = { hash, at: now };
    return hash;
  }

  /** True when the presented token is the current admin token (constant-time comparison of hashes). */
  async matches(token: string | null): Promise<boolean> {
    if (!token) return false;
    const h = await this.storedHash();
    return h !== null && tokenMatches(token, h);
  }

  /** Replaces the admin token; the old one is refused from now on (on other replicas within CACHE_MS). */
  async rotate(actor: string): Promise<string> {
    const token = newToken('adm');
    await this.store.db.transaction().execute(async (tx) => {
      await setMeta(tx, KEY, hashToken(token));
      await appendAudit(tx, {
        at: this.clock(),
        actor,
        action: 'admin.token-rotated',
        subject: 'admin',
        detail: {},
      });
    });
    this.cached = null;
    return token;
  }
}
