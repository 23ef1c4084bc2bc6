// What a device runs before staging a release: the TUF client workflow (tuf-js Updater) against the
// organisation's metadata, starting from the root pinned at enrollment. A release is accepted only when every
// artifact the server offers is listed in the signed targets with the same sha256 and length.
// tuf-js writes its metadata cache with plain writeFileSync; we give it a scratch copy and, only when the whole
// check passed, move the new files into the real cache one atomic rename at a time (root first, timestamp
// last), so a crash or a refusal never leaves torn or untrusted metadata behind. When the server says its
// timestamp is unchanged since then (If-None-Match → 304), the cached metadata answers alone (conditional.ts).
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
// Types only: tuf-js (and the fetcher built on it) is loaded when a full refresh is needed, not when the
// server's timestamp is unchanged (conditional.ts), which keeps it out of the agent's memory then.
import type { Fetcher } from 'tuf-js';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { within } from '../../files/within.ts';
import { targetPath } from '../target-path.ts';
import { conditionalRefresh, recordEtag } from './conditional.ts';
import { matchTarget } from './match.ts';

export interface OfferedArtifact {
  name: string;
  sha256: string;
  length: number;
  /**
   * The file mode offered with it (0..0o777), if any. For the organisation's targets the signed `custom.mode`
   * wins: an offered mode that disagrees with it (or, for a target signed without one, with 0o644) is refused
   * as `mismatch`. Vendor targets (`pathOf`) carry no Ringfence mode: it is not checked there.
   */
  mode?: number;
}

export interface VerifyRequest {
  /** The device's trusted metadata cache (created if missing). */
  metadataDir: string;
  /** root.json (bytes, or a file path) received at enrollment; used only while metadataDir has no root yet. */
  pinnedRoot?: Buffer | string;
  /** Metadata base: `http(s)://server/v1/tuf`, a mirror URL, a folder path or a file: URL. */
  source: string;
  /** Targets base; default `<source>/targets`. */
  targetsSource?: string;
  component: string;
  version: string;
  /** What the server (or a bundle) offers: each must match the signed targets exactly. */
  artifacts: OfferedArtifact[];
  /** When set, each artifact is downloaded from targetsSource, hash-checked, and written here under its name. */
  downloadDir?: string;
  /** Extra HTTP headers (e.g. the device token), timeouts. */
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Override the transport entirely (tests, custom mirrors). */
  fetcher?: Fetcher;
  /** Where each artifact is listed in the signed targets (default `component/version/name`; a vendor's own layout). */
  pathOf?: (name: string) => string;
  /** Whose targets these are, for refusal reasons (default: the organisation). */
  signer?: string;
  /** The clock the cached metadata's expiry is checked against on a conditional refresh (default: now). */
  now?: number;
}

export type RefusalClass =
  | 'unapproved'
  | 'mismatch'
  | 'rollback'
  | 'expired'
  | 'signature'
  | 'oversized'
  | 'tampered'
  | 'unreachable'
  | 'no-root'
  | 'invalid'
  // Dual control: the vendor's own TUF metadata disagrees, is badly signed, expired or missing (vendor-tuf.ts).
  | `vendor-${string}`;

export type VerifyResult =
  | {
      ok: true;
      /** Trusted versions after this check (for status reports). */
      versions: { root: number; timestamp: number; snapshot: number; targets: number };
      artifacts: Array<OfferedArtifact & { path: string; file?: string }>;
    }
  | { ok: false; refused: true; class: RefusalClass; reason: string };

export function toUrl(src: string): string {
  if (/^(https?|file):/.test(src)) return src.replace(/\/+$/, '');
  return pathToFileURL(isAbsolute(src) ? src : resolve(src)).href;
}

/** Maps tuf-js errors (often wrapped in RuntimeError text) to a refusal class and a one-line reason. */
export function classify(e: unknown): { class: RefusalClass; reason: string } {
  const err = e as Error;
  const msg = `${err?.constructor?.name ?? 'Error'}: ${err?.message ?? String(e)}`;
  const is = (re: RegExp) => re.test(msg);
  if (is(/Max length reached|DownloadLengthMismatch/))
    return { class: 'oversized', reason: `metadata or file larger than allowed (endless data): ${msg}` };
  if (is(/expired/i))
    return { class: 'expired', reason: `metadata expired (freeze attack or stale mirror): ${msg}` };
  if (is(/BadVersion|version \S+ is less than|expected version|version mismatch/i))
    return {
      class: 'rollback',
      reason: `metadata version went backwards or does not match (rollback): ${msg}`,
    };
  if (is(/UnsignedMetadata|signed by|signature|threshold/i))
    return {
      class: 'signature',
      reason: `signatures do not meet the role's trusted keys and threshold: ${msg}`,
    };
  if (is(/hash|length/i))
    return { class: 'tampered', reason: `content does not match its signed hash or length: ${msg}` };
  if (is(/cannot reach|HTTP|no such file|DownloadHTTP/))
    return { class: 'unreachable', reason: `cannot fetch metadata or target: ${msg}` };
  return { class: 'invalid', reason: msg };
}

const ORDER = (f: string) =>
  f === 'root.json'
    ? 0
    : f.includes('targets')
      ? 1
      : f.includes('snapshot')
        ? 2
        : f === 'timestamp.json'
          ? 3
          : 1;

/** Verifies one release with TUF; see the file header. Never throws for a trust failure: it refuses. */
export async function verifyRelease(req: VerifyRequest): Promise<VerifyResult> {
  mkdirSync(req.metadataDir, { recursive: true });
  if (!existsSync(join(req.metadataDir, 'root.json'))) {
    if (!req.pinnedRoot)
      return { ok: false, refused: true, class: 'no-root', reason: 'no pinned TUF root on this device' };
    const bytes =
      typeof req.pinnedRoot === 'string' && !req.pinnedRoot.trimStart().startsWith('{')
        ? readFileSync(req.pinnedRoot)
        : Buffer.from(req.pinnedRoot);
    writeFileAtomicSync(join(req.metadataDir, 'root.json'), bytes);
  }
  const base = toUrl(req.source);
  if (!req.fetcher && !req.downloadDir) {
    const c = await conditionalRefresh({
      metadataDir: req.metadataDir,
      base,
      headers: req.headers,
      timeoutMs: req.timeoutMs,
      now: req.now ?? Date.now(),
    });
    if (c.kind === 'expired') return { ok: false, refused: true, class: 'expired', reason: c.reason };
    if (c.kind === 'unchanged') {
      const out: Array<OfferedArtifact & { path: string; file?: string }> = [];
      for (const a of req.artifacts) {
        const path = req.pathOf ? req.pathOf(a.name) : targetPath(req.component, req.version, a.name);
        const m = matchTarget(a, path, c.target(path), { vendor: !!req.pathOf, signer: req.signer });
        if (!m.ok) return m;
        out.push({ ...a, path, ...(m.mode !== undefined ? { mode: m.mode } : {}) });
      }
      return { ok: true, versions: c.versions, artifacts: out };
    }
  }
  const [{ Updater }, { MirrorFetcher }] = await Promise.all([import('tuf-js'), import('./fetcher.ts')]);
  const work = `${req.metadataDir.replace(/\/+$/, '')}.work-${randomBytes(4).toString('hex')}`;
  mkdirSync(work);
  try {
    const before = new Map<string, Buffer>();
    for (const f of readdirSync(req.metadataDir)) {
      if (!f.endsWith('.json') || f.startsWith('.')) continue;
      before.set(f, readFileSync(join(req.metadataDir, f)));
      copyFileSync(join(req.metadataDir, f), join(work, f));
    }
    const mirror = req.fetcher ? null : new MirrorFetcher({ headers: req.headers, timeoutMs: req.timeoutMs });
    const updater = new Updater({
      metadataDir: work,
      metadataBaseUrl: base,
      targetBaseUrl: req.targetsSource ? toUrl(req.targetsSource) : `${base}/targets`,
      fetcher: req.fetcher ?? mirror!,
    });
    const out: Array<OfferedArtifact & { path: string; file?: string }> = [];
    try {
      await updater.refresh();
      for (const a of req.artifacts) {
        const path = req.pathOf ? req.pathOf(a.name) : targetPath(req.component, req.version, a.name);
        const info = await updater.getTargetInfo(path);
        const m = matchTarget(a, path, info, { vendor: !!req.pathOf, signer: req.signer });
        if (!m.ok) return m;
        const mode = m.mode;
        let file: string | undefined;
        if (req.downloadDir) {
          file = within(req.downloadDir, a.name); // never outside the download folder, whatever the name
          mkdirSync(dirname(file), { recursive: true });
          await updater.downloadTarget(info!, file); // matched, so listed
        }
        out.push({ ...a, path, file, ...(mode !== undefined ? { mode } : {}) });
      }
    } catch (e) {
      return { ok: false, refused: true, ...classify(e) };
    }
    // Commit the newly trusted metadata: only changed files, each by atomic rename, timestamp last.
    const changed = readdirSync(work)
      .filter((f) => f.endsWith('.json'))
      .filter((f) => !before.get(f)?.equals(readFileSync(join(work, f))))
      .sort((a, b) => ORDER(a) - ORDER(b));
    for (const f of changed) writeFileAtomicSync(join(req.metadataDir, f), readFileSync(join(work, f)));
    // After the metadata it vouches for: a crash in between leaves an older ETag, which only costs a full refresh.
    recordEtag(req.metadataDir, mirror?.timestampEtag);
    const read = (f: string) =>
      JSON.parse(readFileSync(join(req.metadataDir, f), 'utf8')).signed.version as number;
    return {
      ok: true,
      versions: {
        root: read('root.json'),
        timestamp: read('timestamp.json'),
        snapshot: read('snapshot.json'),
        targets: read('targets.json'),
      },
      artifacts: out,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
