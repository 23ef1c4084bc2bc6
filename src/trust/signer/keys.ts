// Ed25519 signing keys for the TUF roles: generated and used through node:crypto, stored 0600 as JSON.
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Key, Signature } from '@tufjs/models';
import { type PermissionLog, tightenMode, writeFileAtomicSync } from '../../files/atomic-file.ts';

export type RoleName = 'root' | 'targets' | 'snapshot' | 'timestamp';

export interface KeyFile {
  keyid: string;
  role: RoleName;
  keytype: 'ed25519';
  scheme: 'ed25519';
  public: string; // raw 32-byte public key, hex (the TUF ed25519 keyval form)
  private: string; // PKCS#8 PEM
}

/** The TUF key id: sha256 over the canonical JSON of the public key (keys sorted, no spaces). */
export function keyIdOf(publicHex: string): string {
  const canonical = `{"keytype":"ed25519","keyval":{"public":"${publicHex}"},"scheme":"ed25519"}`;
  return createHash('sha256').update(canonical).digest('hex');
}

/** Makes a fresh ed25519 key for a role. */
export function generateKey(role: RoleName): KeyFile {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  // The SPKI DER of an ed25519 key ends with the 32 raw key bytes.
  const publicHex = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');
  return {
    keyid: keyIdOf(publicHex),
    role,
    keytype: 'ed25519',
    scheme: 'ed25519',
    public: publicHex,
    private: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
}

/** The public half as a TUF Key for root metadata. */
export function tufKey(k: Pick<KeyFile, 'keyid' | 'public'>): Key {
  return new Key({ keyID: k.keyid, keyType: 'ed25519', scheme: 'ed25519', keyVal: { public: k.public } });
}

/** A signer for Metadata.sign(): ed25519 over the canonical bytes tuf hands us. */
export function signerOf(k: KeyFile): (data: Buffer) => Signature {
  const priv: KeyObject = createPrivateKey(k.private);
  return (data) => new Signature({ keyID: k.keyid, sig: sign(null, data, priv).toString('hex') });
}

/** Writes a key file readable by its owner only. */
export function writeKeyFile(dir: string, name: string, k: KeyFile): string {
  const path = join(dir, `${name}.json`);
  writeFileAtomicSync(path, `${JSON.stringify(k, null, 2)}\n`, 0o600);
  return path;
}

/**
 * Reads a key file. A private key other users can read (copied in, restored from a backup, made by an older
 * version) is tightened to 0600 first, and that is reported.
 */
export function readKeyFile(path: string, log?: PermissionLog): KeyFile {
  tightenMode(path, log);
  const k = JSON.parse(readFileSync(path, 'utf8')) as KeyFile;
  if (k.keytype !== 'ed25519' || !k.private || keyIdOf(k.public) !== k.keyid)
    throw new Error(`${path} is not a Ringfence ed25519 key file`);
  return k;
}

/** Every key file of a role found in a folder (root-1.json, root-2.json, targets.json, ...). */
export function readRoleKeys(dir: string, role: RoleName, log?: PermissionLog): KeyFile[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith('.json') && (n === `${role}.json` || n.startsWith(`${role}-`)))
    .sort()
    .map((n) => readKeyFile(join(dir, n), log))
    .filter((k) => k.role === role);
}

/**
 * Makes a key folder and the key files in it private (0700 / 0600) when something loosened them; each fix is
 * logged. Run when the data folder is opened, so keys are protected before anything signs with them.
 */
export function tightenKeyDir(dir: string, log?: PermissionLog): number {
  if (!existsSync(dir)) return 0;
  let fixed = tightenMode(dir, log) ? 1 : 0;
  for (const n of readdirSync(dir)) if (n.endsWith('.json') && tightenMode(join(dir, n), log)) fixed++;
  return fixed;
}
