// Defence in depth for paths built from untrusted names (an offered artifact, a version, a bundle entry): the
// result must lie strictly inside its base folder, whatever the name holds.
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { show } from '../protocol/names.ts';

/** A path that would leave its folder (or holds a NUL byte). */
export class UnsafePathError extends Error {}

/** Resolves `parts` under `base`; throws UnsafePathError unless the result is strictly inside it. */
export function within(base: string, ...parts: string[]): string {
  const b = resolve(base);
  for (const p of parts)
    if (typeof p !== 'string' || p.includes('\0'))
      throw new UnsafePathError(`unsafe path ${show(p)} under ${b}`);
  const full = resolve(b, ...parts);
  const rel = relative(b, full);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel))
    throw new UnsafePathError(`unsafe path ${show(parts.join('/'))}: resolves outside ${b}`);
  return full;
}
