// Who is calling the admin API: set on every admin request by the admin plugin's authentication (plugins/admin.ts)
// and read by the routes, which pass `actor` to the services (the audit log names it). Route options declare the
// permission a route needs (`config: { permission }`, see roles.ts).
import type { FastifyRequest } from 'fastify';
import { unauthorized } from './errors.ts';
import type { Permission, Role } from './roles.ts';

/** The authenticated operator of an admin request. */
export interface RequestOperator {
  name: string;
  role: Role;
  /** The name of the token it used (`default`, `bootstrap`, or a named API token). */
  token: string;
  /** What the audit log records: `name`, or `name/token` for a named API token. */
  actor: string;
  /** The row of the token used (several `oidc` session tokens share a name). */
  tokenId: string;
  /** When the token used expires (null: never). */
  expiresAt: number | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the admin plugin on every admin route (undefined elsewhere). */
    operator?: RequestOperator;
  }
  interface FastifyContextConfig {
    /** What an admin route needs (roles.ts); the admin plugin refuses to start with an admin route without one. */
    permission?: Permission;
  }
}

/** The operator of an admin request (set by the admin plugin's authentication; 401 if it is missing). */
export function callerOf(req: FastifyRequest): RequestOperator {
  if (!req.operator) throw unauthorized('admin token required');
  return req.operator;
}
