// Release references as operators write them: "NAME@VERSION".
import { badRequest } from '../errors.ts';

/** Splits "name@version" (400 when it is not one). */
export function parseRef(ref: string): { component: string; version: string } {
  const i = ref.lastIndexOf('@');
  if (i <= 0 || i === ref.length - 1) throw badRequest(`expected NAME@VERSION, got "${ref}"`);
  return { component: ref.slice(0, i), version: ref.slice(i + 1) };
}
