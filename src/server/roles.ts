// Roles and what they may do: pure data and checks, enforced per route by the admin plugin (plugins/admin.ts).
// docs/security.md has the same table for operators.

export type Role = 'viewer' | 'operator' | 'approver' | 'admin';
export type Permission = 'read' | 'operate' | 'approve' | 'admin';

export const ROLES: readonly Role[] = ['viewer', 'operator', 'approver', 'admin'];

export const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = {
  viewer: ['read'],
  operator: ['read', 'operate'],
  approver: ['read', 'approve'],
  admin: ['read', 'operate', 'approve', 'admin'],
};

/** True when `role` has permission `p`. */
export function allows(role: Role, p: Permission): boolean {
  return ROLE_PERMISSIONS[role].includes(p);
}

/** The one-line 403 reason when `role` lacks `p` for `what` ("approve releases"), else null. */
export function refusal(role: Role, p: Permission, what: string): string | null {
  if (allows(role, p)) return null;
  const holders = ROLES.filter((r) => allows(r, p));
  return `role ${role} may not ${what} (needs ${holders.join(' or ')})`;
}

/** Narrows a string to a role, or null. */
export function asRole(s: string): Role | null {
  return (ROLES as readonly string[]).includes(s) ? (s as Role) : null;
}
