// Dual control: a vendor's own TUF metadata, verified against the vendor root pinned on this server and stored
// exactly as the vendor signed it (docs/trust.md, "Dual control"); a stored set is audited.
import { storeVendorMetadata, TufSetError, type VendorStoreResult } from '../../trust/signer/vendor-store.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { badRequest } from '../errors.ts';

/** An upload: file contents by name, the root the operator pinned (first upload) and the release it serves. */
export interface VendorTufUpload {
  files: Map<string, Buffer>;
  root?: Buffer;
  release?: string;
}

/** Verifies and stores a vendor's metadata set (400 when it does not verify); audits what was stored. */
export async function storeVendorTuf(
  db: Db,
  dataDir: string,
  vendor: string,
  up: VendorTufUpload,
  now: number,
  actor: string,
): Promise<VendorStoreResult> {
  let r: VendorStoreResult;
  try {
    r = storeVendorMetadata(dataDir, vendor, up.files, { root: up.root, now });
  } catch (e) {
    if (e instanceof TufSetError) throw badRequest(e.message);
    throw e;
  }
  if (r.stored)
    await db.transaction().execute((tx) =>
      appendAudit(tx, {
        at: now,
        actor,
        action: 'vendor-tuf.stored',
        subject: `vendor/${vendor}`,
        detail: {
          files: [...up.files.keys()].filter((n) => !r.ignored.includes(n)).sort(),
          timestamp_version: r.timestamp_version,
          root_version: r.root_version,
          root_keyids: r.root_keyids,
          pinned: r.pinned,
          release: up.release,
        },
      }),
    );
  return r;
}
