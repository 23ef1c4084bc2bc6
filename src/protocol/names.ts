// Names that travel between server and device and become paths on a device: component and version names,
// artifact names and hashes. One definition, used by the server when it accepts a release and by the agent when
// it accepts an offer, so the two can never disagree about what is safe.
import { isAbsolute } from 'node:path';

/** Component and version names: the pattern the server enforces at release import and the agent checks again. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;
export const SHA256_RE = /^[0-9a-f]{64}$/;
/** Desired entries accepted in one check-in answer (every component the server could offer, with room to spare). */
export const MAX_OFFERS = 256;
/** Artifacts accepted in one offered release: the server's own limit at release import. */
export const MAX_ARTIFACTS = 10_000;
/** Default largest artifact accepted: the server's upload limit (`POST /v1/admin/blobs`); `limits.max_artifact_bytes`. */
export const MAX_ARTIFACT_BYTES = 16 * 1024 ** 3;
/** Artifact names: total length (the server's limit) and per path segment (NAME_MAX, in UTF-8 bytes). */
export const MAX_NAME_LENGTH = 1024;
export const MAX_SEGMENT_BYTES = 255;
/** A download URL, when given, is a path on the server the device checked in with. */
export const MAX_URL_LENGTH = 2048;

// C0 controls and DEL: never in a name, a path or a URL (NUL truncates paths in C, the rest forge log lines and
// terminal output).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
export const CONTROL = /[\u0000-\u001f\u007f]/;

/** A short, escaped rendering of a hostile value for logs and reasons (no control characters, bounded). */
export function show(v: unknown, max = 80): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** Why a component or version name is unacceptable, or null. */
export function badName(v: unknown, what: string): string | null {
  if (typeof v !== 'string') return `${what} ${show(v)} is not a string`;
  if (!NAME_RE.test(v) || v === '.' || v === '..')
    return `${what} ${show(v)} does not match ${NAME_RE.source} (a traversal attempt or a forged offer)`;
  return null;
}

/**
 * Why an artifact name is unacceptable, or null. A name is a relative path of '/'-separated segments (the `dir`
 * backend creates subfolders), each non-empty, not '.' or '..', with no backslash and no control character.
 */
export function badArtifactName(v: unknown): string | null {
  if (typeof v !== 'string') return `artifact name ${show(v)} is not a string`;
  if (v.length === 0 || v.length > MAX_NAME_LENGTH)
    return `artifact name ${show(v)} must be 1 to ${MAX_NAME_LENGTH} characters`;
  if (CONTROL.test(v)) return `artifact name ${show(v)} contains a control character`;
  if (v.includes('\\')) return `artifact name ${show(v)} contains a backslash`;
  if (v.startsWith('/') || isAbsolute(v)) return `artifact name ${show(v)} is an absolute path`;
  for (const seg of v.split('/')) {
    if (seg === '' || seg === '.' || seg === '..')
      return `artifact name ${show(v)} has an empty, '.' or '..' path segment`;
    if (Buffer.byteLength(seg) > MAX_SEGMENT_BYTES)
      return `artifact name ${show(v)} has a path segment longer than ${MAX_SEGMENT_BYTES} bytes`;
  }
  return null;
}

/** The artifact names of one release, added one by one: refuses duplicates and a file that is also a folder. */
export class ArtifactNames {
  private readonly names = new Set<string>();
  private readonly dirs = new Set<string>();

  /** Adds a (valid) name; returns why it clashes with the names added before, or null. */
  add(n: string): string | null {
    if (this.names.has(n)) return `artifact name ${show(n)} appears twice`;
    if (this.dirs.has(n)) return `artifact name ${show(n)} is also a folder of another artifact`;
    const parts = n.split('/');
    for (let k = 1; k < parts.length; k++) {
      const d = parts.slice(0, k).join('/');
      if (this.names.has(d)) return `artifact name ${show(n)} is inside another artifact ${show(d)}`;
    }
    for (let k = 1; k < parts.length; k++) this.dirs.add(parts.slice(0, k).join('/'));
    this.names.add(n);
    return null;
  }
}

// File modes travel with a release (`release import` records them; TUF targets sign them in `custom.mode`). Only
// permission bits are accepted on the wire; a device never applies more than rwxr-xr-x: no setuid, setgid or
// sticky bit, no group or other write, whatever a server, a bundle or even the signed metadata says.
/** The largest mode accepted in a release, an offer or a bundle (permission bits only). */
export const MAX_MODE = 0o777;
/** What a device applies at most: `mode & MODE_MASK`. */
export const MODE_MASK = 0o755;
/** The mode of an artifact whose release carries none (releases imported before modes were recorded). */
export const DEFAULT_MODE = 0o644;

/** Why an artifact mode is unacceptable (an integer 0..0o777), or null. */
export function badMode(v: unknown, name: string): string | null {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_MODE)
    return `mode ${show(v)} of ${show(name)} is not an integer from 0 to 0o777 (511)`;
  return null;
}

/** The mode a device gives a staged file: the release's mode masked to 0o755, or 0o644 when it has none. */
export function effectiveMode(mode: number | undefined | null): number {
  return typeof mode === 'number' ? mode & MODE_MASK : DEFAULT_MODE;
}

/** A mode for humans: `0755`. */
export function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}
