// The vendors' TUF metadata as kept by the server (DATA/vendor-tuf/<vendor>/): the files exactly as the vendor
// signed them, published at /v1/vendor-tuf/<vendor>/<name> and carried in offline bundles. No tuf-js here: the
// server only stores and serves; the CLI verified the files at import and every device verifies them again.
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../store/atomic-file.ts';

export const VENDOR_FILE = /^(\d+\.)?(root|timestamp|snapshot|targets)\.json$/;
export const VENDOR_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function vendorDir(dataDir: string, vendor: string): string {
  if (!VENDOR_NAME.test(vendor)) throw new Error(`bad vendor name ${vendor}`);
  return join(dataDir, 'vendor-tuf', vendor);
}

const versionOf = (b: Buffer | null): number => {
  try {
    return b ? (JSON.parse(b.toString()).signed.version as number) : 0;
  } catch {
    return 0;
  }
};

export function readVendorFile(dataDir: string, vendor: string, name: string): Buffer | null {
  if (!VENDOR_NAME.test(vendor) || !VENDOR_FILE.test(name)) return null;
  const f = join(vendorDir(dataDir, vendor), name);
  return existsSync(f) ? readFileSync(f) : null;
}

/**
 * Stores a vendor's metadata set. The newest timestamp wins: importing an older release with older vendor metadata
 * never rolls the published set back (devices would refuse it as a rollback). Every file is written atomically,
 * timestamp.json last, so a reader sees the previous set or the new one.
 */
export function storeVendorMetadata(
  dataDir: string,
  vendor: string,
  files: Record<string, Buffer>,
): { stored: boolean; timestamp_version: number } {
  const names = Object.keys(files);
  const bad = names.filter((n) => !VENDOR_FILE.test(n));
  if (bad.length) throw new Error(`not TUF metadata file names: ${bad.join(', ')}`);
  if (!files['timestamp.json']) throw new Error('the vendor metadata has no timestamp.json');
  const dir = vendorDir(dataDir, vendor);
  const have = versionOf(readVendorFile(dataDir, vendor, 'timestamp.json'));
  const got = versionOf(files['timestamp.json']);
  if (got < have) return { stored: false, timestamp_version: have };
  mkdirSync(dir, { recursive: true });
  for (const n of names.filter((x) => x !== 'timestamp.json').sort())
    writeFileAtomicSync(join(dir, n), files[n]);
  writeFileAtomicSync(join(dir, 'timestamp.json'), files['timestamp.json']);
  return { stored: true, timestamp_version: got };
}

/** Every vendor with metadata on this server, and its files (for bundles). */
export function vendorSets(dataDir: string): Array<{ vendor: string; files: string[] }> {
  const root = join(dataDir, 'vendor-tuf');
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && VENDOR_NAME.test(e.name))
    .map((e) => ({
      vendor: e.name,
      files: readdirSync(join(root, e.name)).filter((f) => VENDOR_FILE.test(f)),
    }))
    .filter((s) => s.files.includes('timestamp.json'));
}
