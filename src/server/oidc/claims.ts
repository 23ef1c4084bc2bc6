// From verified ID token claims to a Ringfence operator: the name claim must already be a valid operator name
// (never rewritten: "Alice" and "alice" must not become the same operator), and the role claim's values map to
// roles through server.yaml `oidc.roles`, the most powerful match winning. Pure: the caller verified the token.
import { ROLES, type Role } from '../roles.ts';
import { NAME_PATTERN } from '../services/operator-names.ts';

const NAME_RE = new RegExp(NAME_PATTERN);
/** How much of a claim a refusal quotes (claims come from the IdP; messages stay one short line). */
const QUOTE_MAX = 160;

/** What maps claims to an operator (server.yaml `oidc:`). */
export interface ClaimMapping {
  nameClaim: string;
  roleClaim: string;
  roles: Readonly<Record<string, Role>>;
}

/** The operator the claims name, or the one-line reason they do not yield one (answered 403). */
export type MappedClaims = { ok: true; name: string; role: Role } | { ok: false; message: string };

/** Power order for "the most powerful wins": the order of ROLES (viewer < operator < approver < admin). */
function power(role: Role): number {
  return ROLES.indexOf(role);
}

/** A claim value quoted for a message: one line, printable, bounded. */
export function quote(value: unknown): string {
  const s = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  const line = s.replace(/[\u0000-\u001f\u007f\s]+/g, ' ');
  return line.length > QUOTE_MAX ? `${line.slice(0, QUOTE_MAX)}…` : line;
}

/** The values of the role claim: a string, or the strings of an array; anything else yields none. */
function roleValues(claim: unknown): string[] {
  if (typeof claim === 'string') return [claim];
  if (Array.isArray(claim)) return claim.filter((v): v is string => typeof v === 'string');
  return [];
}

/** Maps verified claims to an operator name and role, or says why not. */
export function mapClaims(claims: Readonly<Record<string, unknown>>, m: ClaimMapping): MappedClaims {
  const name = claims[m.nameClaim];
  if (name === undefined || name === null || name === '')
    return { ok: false, message: `the ID token has no ${m.nameClaim} claim to name the operator` };
  if (typeof name !== 'string' || !NAME_RE.test(name))
    return {
      ok: false,
      message: `claim ${m.nameClaim} "${quote(name)}" is not a valid operator name (${NAME_PATTERN})`,
    };
  const values = roleValues(claims[m.roleClaim]);
  let role: Role | null = null;
  for (const v of values) {
    // Own keys only: a claim value "constructor" or "__proto__" must not reach Object.prototype.
    const r = Object.hasOwn(m.roles, v) ? m.roles[v] : undefined;
    if (r && (role === null || power(r) > power(role))) role = r;
  }
  if (role === null) {
    const seen = values.length > 0 ? quote(values.join(', ')) : 'none';
    return { ok: false, message: `no Ringfence role for ${name} (claim ${m.roleClaim}: ${seen})` };
  }
  return { ok: true, name, role };
}
