// What the agent accepts from a server (or an offline bundle) before anything touches the filesystem. Every
// field of an offer is hostile until checked here: a version, artifact name or hash becomes a path on the device,
// and over plain HTTP anyone in the middle can forge an offer (sha256-only mode). `within()` is the defence in
// depth every path built from an offer goes through, so a value that slipped past validation still cannot
// leave its folder.
import { within as pathWithin, UnsafePathError } from '../files/within.ts';
import {
  ArtifactNames,
  badArtifactName,
  badMode,
  badName,
  CONTROL,
  MAX_ARTIFACT_BYTES,
  MAX_ARTIFACTS,
  MAX_OFFERS,
  MAX_URL_LENGTH,
  SHA256_RE,
  show,
} from '../protocol/names.ts';
import { StepError } from './step-error.ts';

export * from '../protocol/names.ts';

/** An artifact as the agent uses it: all fields checked. */
export interface ValidArtifact {
  name: string;
  sha256: string;
  length: number;
  url: string;
  /** The release's file mode (0..0o777) when it carries one; the device applies `effectiveMode()` of it. */
  mode?: number;
}

export interface ValidOffer {
  component: string;
  version: string;
  artifacts: ValidArtifact[];
}

export type OfferCheck =
  | { ok: true; offer: ValidOffer }
  /** `version` is printable and at most 128 characters, so it can be reported and compared safely. */
  | { ok: false; version: string; reason: string };

/** The version as reported back for a refused offer: the offered string when it is sane, else a bounded rendering. */
export function reportableVersion(v: unknown): string {
  if (typeof v === 'string' && v.length > 0 && v.length <= 128 && !CONTROL.test(v)) return v;
  return show(v, 120);
}

/** Why a download URL is unacceptable, or null: it must be a path on `server` itself (same origin). */
export function badUrl(v: unknown, server: string | undefined): string | null {
  if (typeof v !== 'string') return `url ${show(v)} is not a string`;
  if (v.length === 0 || v.length > MAX_URL_LENGTH)
    return `url ${show(v)} must be 1 to ${MAX_URL_LENGTH} characters`;
  // '//host' and '/\host' are other origins to a URL parser; only a plain absolute path is accepted.
  if (!v.startsWith('/') || v.startsWith('//') || v.includes('\\') || CONTROL.test(v))
    return `url ${show(v)} is not a path on the server (an other origin would get the device token)`;
  if (server) {
    try {
      if (new URL(v, server).origin !== new URL(server).origin) return `url ${show(v)} leaves the server`;
    } catch {
      return `url ${show(v)} is not a valid URL path`;
    }
  }
  return null;
}

/**
 * Checks one offered release — a check-in answer's `desired` entry or an offline bundle's release — field by
 * field. Nothing is trusted: types, names, hashes, lengths, URLs and counts. Unknown fields are ignored.
 */
export function checkOffer(
  raw: unknown,
  opts: {
    /** The configured component it must be for. */
    component: string;
    /** The server it came from: `url` must be a path there. Absent for bundles (no URL is used). */
    server?: string;
    maxArtifactBytes?: number;
  },
): OfferCheck {
  const o = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const version = reportableVersion(o.version);
  const no = (reason: string): OfferCheck => ({ ok: false, version, reason: `invalid offer: ${reason}` });
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return no(`${show(raw)} is not an object`);
  const badComp = badName(o.component, 'component');
  if (badComp) return no(badComp);
  if (o.component !== opts.component)
    return no(`component ${show(o.component)} is not ${show(opts.component)}`);
  const badVersion = badName(o.version, 'version');
  if (badVersion) return no(badVersion);
  if (!Array.isArray(o.artifacts)) return no('artifacts is not a list');
  if (o.artifacts.length === 0) return no('no artifacts');
  if (o.artifacts.length > MAX_ARTIFACTS)
    return no(`${o.artifacts.length} artifacts, more than the limit of ${MAX_ARTIFACTS}`);
  const maxBytes = opts.maxArtifactBytes ?? MAX_ARTIFACT_BYTES;
  const names = new ArtifactNames();
  const artifacts: ValidArtifact[] = [];
  for (const [i, a] of (o.artifacts as unknown[]).entries()) {
    if (!a || typeof a !== 'object' || Array.isArray(a)) return no(`artifact #${i} is not an object`);
    const { name, sha256, length, url, mode } = a as Record<string, unknown>;
    const badN = badArtifactName(name) ?? names.add(name as string);
    if (badN) return no(badN);
    const n = name as string;
    if (typeof sha256 !== 'string' || !SHA256_RE.test(sha256))
      return no(`sha256 ${show(sha256)} of ${show(n)} is not 64 lowercase hex digits`);
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0)
      return no(`length ${show(length)} of ${show(n)} is not a non-negative safe integer`);
    if (length > maxBytes)
      return no(
        `length ${length} of ${show(n)} is above the limit of ${maxBytes} bytes (limits.max_artifact_bytes)`,
      );
    let u = `/v1/blobs/${sha256}`;
    if (url !== undefined && url !== null) {
      const badU = badUrl(url, opts.server);
      if (badU) return no(badU);
      u = url as string;
    }
    // Absent (or null) for releases imported before modes were recorded: the device uses 0o644.
    if (mode !== undefined && mode !== null) {
      const badM = badMode(mode, n);
      if (badM) return no(badM);
    }
    artifacts.push({ name: n, sha256, length, url: u, ...(typeof mode === 'number' ? { mode } : {}) });
  }
  return { ok: true, offer: { component: o.component as string, version: o.version as string, artifacts } };
}

/**
 * The offers of one check-in answer for the configured components: each raw entry (checked later by
 * checkOffer), or a reason to refuse what was offered for that component (too many entries, or two for it).
 * A `desired` that is not a list is a malformed answer, not an offer: it throws.
 */
export function offersByComponent(
  desired: unknown,
  components: string[],
): Map<string, { raw: unknown; error?: string }> {
  if (desired === undefined || desired === null) return new Map();
  if (!Array.isArray(desired)) throw new Error(`malformed check-in answer: desired is ${show(desired, 40)}`);
  const out = new Map<string, { raw: unknown; error?: string }>();
  const mine = new Set(components);
  for (const d of desired) {
    const c = (d as { component?: unknown } | null)?.component;
    if (typeof c !== 'string' || !mine.has(c)) continue; // not for this device: never used, never touched
    const seen = out.get(c);
    if (seen) {
      if (!seen.error) out.set(c, { raw: seen.raw, error: `invalid offer: ${show(c)} is offered twice` });
      continue;
    }
    out.set(c, { raw: d });
  }
  if (desired.length > MAX_OFFERS)
    for (const [c, v] of out)
      out.set(c, {
        raw: v.raw,
        error: `invalid offer: ${desired.length} desired entries, more than the limit of ${MAX_OFFERS}`,
      });
  return out;
}

/**
 * Defence in depth: resolves `parts` under `base` and throws (class `invalid`) unless the result is strictly
 * inside it. Every path the agent builds from an offered value (release folder, artifact file, download and
 * blob cache file) goes through here.
 */
export function within(base: string, ...parts: string[]): string {
  try {
    return pathWithin(base, ...parts);
  } catch (e) {
    throw e instanceof UnsafePathError ? new StepError('invalid', e.message) : e;
  }
}
