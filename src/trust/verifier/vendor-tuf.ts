// Dual control (Uptane style), the device's side: the vendor publishes its own TUF repository, signed with its own
// keys, and a device that pins the vendor's root requires both the organisation's targets and the vendor's to list
// each artifact with the same sha256 and length. The import-time check is signer/vendor-import.ts.
import { readFileSync } from 'node:fs';
import { type RefusalClass, verifyRelease } from './device-verifier.ts';

export const DEFAULT_VENDOR_PREFIX = '{component}/{version}/';

/** Where the vendor lists an artifact: the prefix (with `{component}`, `{version}`) followed by the artifact name. */
export function vendorPath(prefix: string, component: string, version: string, name: string): string {
  return `${prefix.replaceAll('{component}', component).replaceAll('{version}', version)}${name}`;
}

/** Maps a verifier refusal on the vendor's metadata to the vendor refusal classes. */
function vendorClass(c: RefusalClass): RefusalClass {
  if (c === 'unapproved' || c === 'mismatch') return 'vendor-mismatch';
  if (c === 'unreachable' || c === 'no-root') return 'vendor-unavailable';
  return `vendor-${c}`; // vendor-signature, vendor-expired, vendor-rollback, vendor-tampered, …
}

/**
 * Device-side check, after the organisation's: the vendor's metadata (from the server's /v1/vendor-tuf/<vendor>,
 * a folder or a mirror), verified from the vendor's pinned root, must list every offered artifact at the vendor's
 * path with the same sha256 and length. Trusted vendor metadata is kept per vendor (rollback protection).
 */
export async function verifyVendorRelease(req: {
  vendor: string;
  rootFile: string;
  metadataDir: string;
  source: string;
  prefix?: string;
  component: string;
  version: string;
  artifacts: Array<{ name: string; sha256: string; length: number }>;
  headers?: Record<string, string>;
}): Promise<{ ok: true } | { ok: false; class: RefusalClass; reason: string }> {
  let root: Buffer;
  try {
    root = readFileSync(req.rootFile);
  } catch (e) {
    return {
      ok: false,
      class: 'vendor-unavailable',
      reason: `vendor ${req.vendor}: cannot read the pinned vendor root: ${(e as Error).message}`,
    };
  }
  const prefix = req.prefix ?? DEFAULT_VENDOR_PREFIX;
  const r = await verifyRelease({
    metadataDir: req.metadataDir,
    pinnedRoot: root,
    source: req.source,
    component: req.component,
    version: req.version,
    artifacts: req.artifacts,
    headers: req.headers,
    timeoutMs: 60_000,
    pathOf: (name) => vendorPath(prefix, req.component, req.version, name),
    signer: `vendor ${req.vendor}`,
  });
  if (r.ok) return { ok: true };
  return { ok: false, class: vendorClass(r.class), reason: `vendor ${req.vendor}: ${r.reason}` };
}
