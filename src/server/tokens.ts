// Bearer tokens: random, shown once, stored only as sha256 hashes.
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A new random token with a readable prefix saying what it is for. */
export function newToken(prefix: 'adm' | 'dev' | 'enr' | 'op'): string {
  return `rf${prefix}_${randomBytes(24).toString('base64url')}`;
}

/** The sha256 (hex) a token is stored and looked up by (one-shot: every check-in hashes its token). */
export function hashToken(token: string): string {
  return hash('sha256', token, 'hex');
}

/** Constant-time comparison of a presented token with a stored hash. */
export function tokenMatches(token: string, storedHash: string): boolean {
  const a = Buffer.from(hashToken(token), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Extracts the bearer token from an Authorization header. */
export function bearer(header: string | undefined): string | null {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return m ? m[1] : null;
}
