// Conditional TUF refresh. After a full, verified refresh the device keeps the ETag the server gave its
// timestamp.json. Next time it asks first with If-None-Match: a 304 says the server's timestamp (and root) are
// unchanged, so the cached metadata, which was verified before it was written, is still the newest the server
// has, and the release is checked against the cached targets with no metadata download, no signature check and
// no tuf-js at all. Nothing is taken from the 304 but "unchanged": every cached role's expiry is enforced here
// (a freeze is bounded by the timestamp's expiry exactly as when the server replays an old timestamp), no
// version moves (rollback protection is the cache's), and anything unusual falls back to the full refresh.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { discard, type HttpResponse, request } from '../../net/http.ts';
import type { SignedTarget } from './match.ts';

/** The ETag of the timestamp.json the cached metadata was verified with (a dot file: never copied as metadata). */
export const ETAG_FILE = '.timestamp-etag';
/** A quoted entity tag as RFC 9110 writes it, bounded; anything else is not stored or sent. */
const ETAG_RE = /^(W\/)?"[\x21\x23-\x7e]{1,200}"$/;
const ROLES = ['root', 'timestamp', 'snapshot', 'targets'] as const;

interface Cached {
  signed: {
    version?: unknown;
    expires?: unknown;
    meta?: Record<string, { version?: unknown }>;
    targets?: Record<string, SignedTarget>;
    delegations?: unknown;
  };
}

export type Conditional =
  /** Do the whole tuf-js refresh (no cache, changed, unreachable, or anything unusual). */
  | { kind: 'full' }
  /** Unchanged on the server and a cached role is past its expiry: refused, as tuf-js would. */
  | { kind: 'expired'; reason: string }
  | {
      kind: 'unchanged';
      versions: { root: number; timestamp: number; snapshot: number; targets: number };
      /** A target entry of the cached, verified targets (own properties only). */
      target: (path: string) => SignedTarget | undefined;
    };

/** Remembers the ETag of the timestamp the cache now holds (or forgets it when there is none or it is odd). */
export function recordEtag(metadataDir: string, etag: string | undefined): void {
  const f = join(metadataDir, ETAG_FILE);
  if (etag && ETAG_RE.test(etag)) writeFileAtomicSync(f, etag);
  else rmSync(f, { force: true });
}

/** Reads the cached metadata; null when a role is missing or malformed. */
function readCache(dir: string): Record<(typeof ROLES)[number], Cached> | null {
  const out: Partial<Record<(typeof ROLES)[number], Cached>> = {};
  for (const r of ROLES) {
    try {
      const m = JSON.parse(readFileSync(join(dir, `${r}.json`), 'utf8')) as Cached;
      if (!m?.signed || !Number.isSafeInteger(m.signed.version)) return null;
      out[r] = m;
    } catch {
      return null;
    }
  }
  return out as Record<(typeof ROLES)[number], Cached>;
}

/**
 * Asks the server whether its timestamp changed since the cached metadata was verified (one small request)
 * and, when it did not, answers from the cache. `base` is the metadata URL (http or https).
 */
export async function conditionalRefresh(opts: {
  metadataDir: string;
  base: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
  now: number;
}): Promise<Conditional> {
  const etagFile = join(opts.metadataDir, ETAG_FILE);
  if (!/^https?:/.test(opts.base) || !existsSync(etagFile)) return { kind: 'full' };
  const etag = readFileSync(etagFile, 'utf8');
  const cache = readCache(opts.metadataDir);
  if (!ETAG_RE.test(etag) || !cache) return { kind: 'full' };
  const { root, timestamp, snapshot, targets } = cache;
  // The chain the full refresh verified: timestamp → snapshot version → targets version, no delegations.
  if (
    timestamp.signed.meta?.['snapshot.json']?.version !== snapshot.signed.version ||
    snapshot.signed.meta?.['targets.json']?.version !== targets.signed.version ||
    targets.signed.delegations !== undefined ||
    typeof targets.signed.targets !== 'object' ||
    targets.signed.targets === null
  )
    return { kind: 'full' };
  let res: HttpResponse;
  try {
    res = await request(`${opts.base}/timestamp.json`, {
      headers: { ...opts.headers, 'if-none-match': etag },
      timeoutMs: Math.min(opts.timeoutMs ?? 30_000, 30_000),
    });
  } catch {
    return { kind: 'full' }; // the full refresh reports what is unreachable
  }
  discard(res);
  if (res.status !== 304) return { kind: 'full' };
  for (const r of ROLES) {
    const expires = Date.parse(String(cache[r].signed.expires));
    if (!Number.isFinite(expires)) return { kind: 'full' };
    if (expires <= opts.now)
      return {
        kind: 'expired',
        reason: `metadata expired (freeze attack or stale mirror): ${r}.json expired ${String(cache[r].signed.expires)} and the server says it has nothing newer`,
      };
  }
  const listed = targets.signed.targets;
  return {
    kind: 'unchanged',
    versions: {
      root: root.signed.version as number,
      timestamp: timestamp.signed.version as number,
      snapshot: snapshot.signed.version as number,
      targets: targets.signed.version as number,
    },
    target: (path) => {
      const t = Object.hasOwn(listed, path) ? listed[path] : undefined;
      // A malformed entry cannot have been verified by tuf-js; treat it as absent rather than guess.
      if (!t || typeof t !== 'object' || !Number.isSafeInteger(t.length) || typeof t.hashes !== 'object')
        return undefined;
      return t;
    },
  };
}
