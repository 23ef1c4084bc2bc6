// Names in the operator model and the rules on them: which names and token names an operator may take, how the
// audit log names an operator's actions, and what makes a chosen admin token strong enough.
import { badRequest } from '../errors.ts';
import { asRole, type Role } from '../roles.ts';

/** Operator and token names: lower case, no `/` (the actor string `NAME/TOKEN` must split unambiguously). */
export const NAME_PATTERN = '^[a-z][a-z0-9._-]{0,63}$';
const NAME_RE = new RegExp(NAME_PATTERN);
/** The operator a new server starts with, and its first token. */
export const BOOTSTRAP = { operator: 'admin', token: 'bootstrap', id: 'tok-bootstrap' } as const;
/** The tokens whose use the audit log records as the bare operator name. */
const PRIMARY_TOKENS = new Set(['default', 'bootstrap']);
/** Token names the server gives itself: an operator may not name its own API token so (its actions would be
 * audited as the bare operator, or look like a login). */
export const SERVER_TOKEN_NAMES = new Set(['default', 'bootstrap', 'oidc']);
/**
 * Operator names the audit log uses for others: an operator called `device` with a token `d1` would be audited as
 * `device/d1`, a device. `admin` is the bootstrap operator's alone.
 */
export const RESERVED_OPERATOR_NAMES: ReadonlySet<string> = new Set([
  'admin',
  'engine',
  'server',
  'device',
  'migration',
  'cli',
  'oidc',
  'prop',
]);
/** `last_used_at` is written at most this often per token. */
export const LAST_USED_RESOLUTION_MS = 60_000;

/** Refuses tokens an attacker could guess: at least 32 characters, and not a short pattern repeated. */
export function weakTokenReason(token: string): string | null {
  if (token.length < 32) return `is ${token.length} characters; at least 32 are required`;
  if (new Set(token).size < 12) return 'repeats too few different characters to be random';
  if (/\s/.test(token)) return 'contains white space';
  return null;
}

/** The audit actor for an operator using one of its tokens. */
export function actorOf(operator: string, token: string): string {
  return PRIMARY_TOKENS.has(token) ? operator : `${operator}/${token}`;
}

/** 400 unless `name` is a valid operator or token name. */
export function checkName(what: 'operator' | 'token', name: string): void {
  if (!NAME_RE.test(name)) throw badRequest(`${what} name "${name}" must match ${NAME_PATTERN}`);
}

/** The role `role` names, or 400. */
export function roleOrRefuse(role: string): Role {
  const r = asRole(role);
  if (!r) throw badRequest(`unknown role "${role}" (viewer, operator, approver or admin)`);
  return r;
}

/** 400 for a name the audit log uses for something else than an operator (see RESERVED_OPERATOR_NAMES). */
export function refuseReserved(name: string): void {
  if (RESERVED_OPERATOR_NAMES.has(name))
    throw badRequest(`operator name ${name} is reserved (the audit log uses it for the server itself)`);
}
