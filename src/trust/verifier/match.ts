// One offered artifact against its entry in signed targets: the same check whether the targets come from a
// full tuf-js refresh (device-verifier.ts) or from the cached, verified metadata (conditional.ts).
import { badMode, DEFAULT_MODE, octal } from '../../protocol/names.ts';
import type { OfferedArtifact, RefusalClass } from './device-verifier.ts';

/** What a signed target entry says about a file (a tuf-js TargetFile, or the same fields read from targets.json). */
export interface SignedTarget {
  length: number;
  hashes: Record<string, string>;
  custom?: Record<string, unknown> | null;
}

export type Match =
  | { ok: true; mode: number | undefined }
  | { ok: false; refused: true; class: RefusalClass; reason: string };

/**
 * The offer must equal the signed sha256 and length; for the organisation's targets (`vendor` false) the
 * signed `custom.mode` wins, and an offered mode that disagrees with it (or with 0o644 when none is signed) is
 * refused. Returns the mode the device applies.
 */
export function matchTarget(
  a: OfferedArtifact,
  path: string,
  info: SignedTarget | undefined,
  opts: { vendor: boolean; signer?: string },
): Match {
  if (!info)
    return {
      ok: false,
      refused: true,
      class: 'unapproved',
      reason: opts.signer
        ? `${path} is not in ${opts.signer}'s signed targets`
        : `${path} is not in the organisation's signed targets (not approved, or arbitrary installation)`,
    };
  if (info.hashes.sha256 !== a.sha256 || info.length !== a.length)
    return {
      ok: false,
      refused: true,
      class: 'mismatch',
      reason: `${path}: offered sha256 ${a.sha256.slice(0, 12)}…/${a.length} bytes, signed ${String(info.hashes.sha256).slice(0, 12)}…/${info.length} bytes`,
    };
  // Vendor targets carry no Ringfence mode: not checked there.
  if (opts.vendor) return { ok: true, mode: a.mode };
  // The file mode is part of the signed release: the one the device applies comes from the targets.
  const custom = (info.custom ?? {}) as Record<string, unknown>;
  const signed = Object.hasOwn(custom, 'mode') ? custom.mode : undefined;
  if (signed !== undefined) {
    const bad = badMode(signed, a.name);
    if (bad) return { ok: false, refused: true, class: 'invalid', reason: `${path}: signed ${bad}` };
  }
  const want = (signed as number | undefined) ?? DEFAULT_MODE;
  if (a.mode !== undefined && a.mode !== want)
    return {
      ok: false,
      refused: true,
      class: 'mismatch',
      reason: `${path}: offered mode ${octal(a.mode)}, signed ${signed === undefined ? `none (${octal(DEFAULT_MODE)})` : octal(want)}`,
    };
  return { ok: true, mode: signed as number | undefined };
}
