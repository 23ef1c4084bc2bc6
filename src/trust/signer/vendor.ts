// Vendor authenticity at import: an ed25519 detached signature over a SHA256SUMS manifest (multi-file
// releases) or over the single file, checked before anything is uploaded. Keys: PEM (SPKI) or minisign
// public keys; signatures: minisign (.minisig, Ed and prehashed ED), raw 64 bytes, base64 or hex.
import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { basename } from 'node:path';

export class VendorVerificationError extends Error {}

export interface VendorProvenance {
  vendor_key_id: string;
  vendor_key_format: 'pem' | 'minisign';
  signature_format: 'minisign' | 'raw';
  signed_over: string;
  manifest_sha256?: string;
  verified_files: Array<{ name: string; sha256: string }>;
}

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

interface PublicKey {
  key: KeyObject;
  raw: Buffer;
  format: 'pem' | 'minisign';
  minisignId?: Buffer;
}

/** Reads a vendor public key file (PEM SPKI, or a minisign .pub). */
export function readVendorKey(path: string): PublicKey {
  const text = readFileSync(path, 'utf8');
  if (text.includes('BEGIN PUBLIC KEY')) {
    const key = createPublicKey(text);
    if (key.asymmetricKeyType !== 'ed25519') throw new VendorVerificationError(`${path}: not an ed25519 key`);
    return { key, raw: key.export({ format: 'der', type: 'spki' }).subarray(-32), format: 'pem' };
  }
  const line = text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('untrusted comment:'));
  const b = Buffer.from(line ?? '', 'base64');
  if (b.length !== 42 || b.subarray(0, 2).toString() !== 'Ed')
    throw new VendorVerificationError(`${path}: not a PEM or minisign ed25519 public key`);
  const raw = b.subarray(10);
  const key = createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, raw]),
    format: 'der',
    type: 'spki',
  });
  return { key, raw, format: 'minisign', minisignId: b.subarray(2, 10) };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/** Checks a detached signature over one file; throws VendorVerificationError with the reason. */
export function verifyDetached(pub: PublicKey, sigPath: string, dataPath: string): 'minisign' | 'raw' {
  const sigBytes = readFileSync(sigPath);
  const data = readFileSync(dataPath);
  const text = sigBytes.toString('utf8');
  if (text.startsWith('untrusted comment:')) {
    const lines = text.split('\n').map((l) => l.trim());
    const sig = Buffer.from(lines[1] ?? '', 'base64');
    const trusted = lines[2] ?? '';
    const global = Buffer.from(lines[3] ?? '', 'base64');
    if (sig.length !== 74) throw new VendorVerificationError(`${sigPath}: malformed minisign signature`);
    const alg = sig.subarray(0, 2).toString();
    if (pub.minisignId && !sig.subarray(2, 10).equals(pub.minisignId))
      throw new VendorVerificationError(`${sigPath} was made by another minisign key`);
    const msg = alg === 'ED' ? createHash('blake2b512').update(data).digest() : data;
    if ((alg !== 'Ed' && alg !== 'ED') || !verify(null, msg, pub.key, sig.subarray(10)))
      throw new VendorVerificationError(`vendor signature does not match ${basename(dataPath)}`);
    if (trusted.startsWith('trusted comment:') && global.length === 64) {
      const g = Buffer.concat([sig.subarray(10), Buffer.from(trusted.slice('trusted comment: '.length))]);
      if (!verify(null, g, pub.key, global))
        throw new VendorVerificationError(`${sigPath}: the trusted comment was altered`);
    }
    return 'minisign';
  }
  const t = text.trim();
  const sig =
    sigBytes.length === 64
      ? sigBytes
      : /^[0-9a-f]{128}$/i.test(t)
        ? Buffer.from(t, 'hex')
        : Buffer.from(t, 'base64');
  if (sig.length !== 64) throw new VendorVerificationError(`${sigPath}: not an ed25519 signature`);
  if (!verify(null, data, pub.key, sig))
    throw new VendorVerificationError(`vendor signature does not match ${basename(dataPath)}`);
  return 'raw';
}

/** Parses `<sha256>  <name>` lines (GNU coreutils, `*` binary marker allowed). */
export function parseSums(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line.replace(/\r$/, ''));
    if (!m) throw new VendorVerificationError(`SHA256SUMS: cannot read line "${line.slice(0, 80)}"`);
    out.set(m[2].replace(/^\.\//, ''), m[1].toLowerCase());
  }
  return out;
}

/**
 * Verifies the vendor's signature over the release files before import. With a SHA256SUMS among the files the
 * signature covers it and every other file must be listed with its hash (and every listed file present);
 * a single file may be signed directly.
 */
export async function verifyVendorRelease(
  files: Array<{ name: string; path: string }>,
  sigPath: string,
  keyPath: string,
): Promise<VendorProvenance> {
  const pub = readVendorKey(keyPath);
  const keyId = createHash('sha256').update(pub.raw).digest('hex');
  const manifest = files.find((f) => basename(f.name) === 'SHA256SUMS');
  if (!manifest) {
    if (files.length !== 1)
      throw new VendorVerificationError(
        'a multi-file release needs a signed SHA256SUMS manifest among its files',
      );
    const format = verifyDetached(pub, sigPath, files[0].path);
    return {
      vendor_key_id: keyId,
      vendor_key_format: pub.format,
      signature_format: format,
      signed_over: files[0].name,
      verified_files: [{ name: files[0].name, sha256: await sha256File(files[0].path) }],
    };
  }
  const format = verifyDetached(pub, sigPath, manifest.path);
  const sums = parseSums(readFileSync(manifest.path, 'utf8'));
  const verified: Array<{ name: string; sha256: string }> = [];
  const seen = new Set<string>();
  for (const f of files) {
    if (f === manifest) continue;
    const listed = sums.get(f.name) ?? sums.get(basename(f.name));
    if (!listed) throw new VendorVerificationError(`${f.name} is not listed in the signed SHA256SUMS`);
    const actual = await sha256File(f.path);
    if (actual !== listed)
      throw new VendorVerificationError(
        `${f.name}: sha256 ${actual} differs from the signed SHA256SUMS (${listed})`,
      );
    seen.add(sums.has(f.name) ? f.name : basename(f.name));
    verified.push({ name: f.name, sha256: actual });
  }
  const absent = [...sums.keys()].filter((n) => !seen.has(n));
  if (absent.length)
    throw new VendorVerificationError(`signed SHA256SUMS lists files not supplied: ${absent.join(', ')}`);
  return {
    vendor_key_id: keyId,
    vendor_key_format: pub.format,
    signature_format: format,
    signed_over: manifest.name,
    manifest_sha256: await sha256File(manifest.path),
    verified_files: verified,
  };
}
