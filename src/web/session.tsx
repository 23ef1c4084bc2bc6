// Who is signed in (GET /v1/admin/whoami) and what that role may do. Buttons for what the role may not do are
// disabled with a tooltip naming the roles that may; the server still decides (its 403 is shown as it says).
import { type ButtonHTMLAttributes, createContext, useContext } from 'react';
import { type Permission, ROLE_PERMISSIONS, ROLES, type Role } from '../server/roles.ts';

export type { Permission, Role };

/** The answer of GET /v1/admin/whoami. */
export interface Whoami {
  name: string;
  role: Role;
  token: string;
  actor: string;
  permissions: Permission[];
}

/** What is waiting for whose approval (releases and rollouts awaiting approval). */
export interface AwaitingApproval {
  what: string;
  /** The operator who may not approve it (four eyes), or null. */
  by_anyone_but: string | null;
}

export const Session = createContext<Whoami | null>(null);

/** The signed-in operator (null only outside the signed-in shell). */
export function useWhoami(): Whoami | null {
  return useContext(Session);
}

/** The roles holding a permission, as the server's 403 names them ("operator or admin"). */
export function rolesWith(p: Permission): string {
  return ROLES.filter((r) => ROLE_PERMISSIONS[r].includes(p)).join(' or ');
}

/** Why the signed-in operator may not do `what` (tooltip text), or null when the role allows it. */
export function roleBlocks(who: Whoami | null, p: Permission, what: string): string | null {
  if (who?.permissions.includes(p)) return null;
  return `Needs role ${rolesWith(p)} to ${what} (you are ${who ? `${who.name}, ${who.role}` : 'not signed in'})`;
}

/** Why `who` may not approve something awaiting approval under the four-eyes rule, or null. */
export function fourEyesBlocks(
  who: Whoami | null,
  waiting: AwaitingApproval | null | undefined,
): string | null {
  if (!who || !waiting?.by_anyone_but || waiting.by_anyone_but !== who.name) return null;
  return `Four eyes: ${who.name} may not approve ${waiting.what}; another approver must`;
}

/** "needs an approver other than alice" (or "needs an approver"). */
export function awaitingText(waiting: AwaitingApproval): string {
  return waiting.by_anyone_but
    ? `needs an approver other than ${waiting.by_anyone_but}`
    : 'needs an approver';
}

/**
 * A button that needs permission `need`: disabled (with a tooltip saying which role may) when the signed-in role
 * lacks it, or when `blocked` gives another reason (four eyes). `data-blocked` tells which of the two it was.
 */
export function RoleButton({
  need,
  what,
  blocked,
  disabled,
  title,
  ...rest
}: ButtonHTMLAttributes<HTMLButtonElement> & { need: Permission; what: string; blocked?: string | null }) {
  const who = useWhoami();
  const byRole = roleBlocks(who, need, what);
  const why = byRole ?? blocked ?? null;
  return (
    <button
      type="button"
      {...rest}
      disabled={disabled || why !== null}
      title={why ?? title}
      data-blocked={byRole ? 'role' : blocked ? 'four-eyes' : undefined}
    />
  );
}
