// Content-addressed blob store: every blob is named by its sha256 and written by temp file + fsync + rename.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  ensurePrivateDir,
  fsyncDir,
  type PermissionLog,
  stderrPermissionLog,
  tightenMode,
} from '../files/atomic-file.ts';

export const SHA256_RE = /^[0-9a-f]{64}$/;

export interface StoredBlob {
  sha256: string;
  length: number;
}

/**
 * Blobs are private to the server's user: folders 0700, files 0600. Devices verify every byte, but releases may
 * be confidential, and another local user must not be able to read (or, through a loose folder, swap) them.
 */
export class BlobStore {
  constructor(
    readonly root: string,
    opts: { log?: PermissionLog } = {},
  ) {
    const log = opts.log ?? stderrPermissionLog;
    const rootFix = ensurePrivateDir(root, log);
    ensurePrivateDir(join(root, 'tmp'), log);
    // A loose root means an older version or a copy made these; sweep every blob once (a private root is only
    // ever written by this class, which creates 0600 files in 0700 folders).
    if (rootFix) this.tightenAll(log);
  }

  private tightenAll(log: PermissionLog): void {
    let fixes = 0;
    const quiet: PermissionLog = { warn: () => fixes++ };
    for (const d of readdirSync(this.root)) {
      const dir = join(this.root, d);
      if (d !== 'tmp' && !/^[0-9a-f]{2}$/.test(d)) continue;
      tightenMode(dir, log);
      for (const f of readdirSync(dir)) tightenMode(join(dir, f), quiet);
    }
    if (fixes) log.warn({ path: this.root, files: fixes }, 'tightened permissions of blob files to 0600');
  }

  /** Where a blob lives: two-level fan-out keeps directories small at millions of blobs. */
  path(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new Error(`invalid sha256 "${sha256}"`);
    return join(this.root, sha256.slice(0, 2), sha256);
  }

  has(sha256: string): boolean {
    return SHA256_RE.test(sha256) && existsSync(this.path(sha256));
  }

  size(sha256: string): number {
    return statSync(this.path(sha256)).size;
  }

  /** Streams input into the store, hashing on the way; checks the expected hash/length when given. */
  async put(input: Readable, expect?: { sha256?: string; maxBytes?: number }): Promise<StoredBlob> {
    const tmp = join(this.root, 'tmp', `${randomBytes(8).toString('hex')}.part`);
    const hash = createHash('sha256');
    let length = 0;
    const max = expect?.maxBytes ?? Number.POSITIVE_INFINITY;
    const out = createWriteStream(tmp, { mode: 0o600 });
    try {
      await pipeline(
        input,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            length += chunk.length;
            if (length > max) throw new Error(`blob larger than ${max} bytes`);
            hash.update(chunk);
            yield chunk;
          }
        },
        out,
      );
      const sha256 = hash.digest('hex');
      if (expect?.sha256 && expect.sha256 !== sha256) {
        throw new Error(`blob hash mismatch: expected ${expect.sha256}, got ${sha256}`);
      }
      const fh = await import('node:fs/promises').then((m) => m.open(tmp, 'r+'));
      await fh.sync();
      await fh.close();
      const dest = this.path(sha256);
      mkdirSync(join(this.root, sha256.slice(0, 2)), { recursive: true, mode: 0o700 });
      await rename(tmp, dest);
      fsyncDir(join(this.root, sha256.slice(0, 2)));
      return { sha256, length };
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  /** Opens a blob (optionally a byte range, inclusive end) for reading. */
  read(sha256: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.path(sha256), range);
  }
}
