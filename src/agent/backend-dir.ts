// The `dir` apply backend: releases/<version>/ folders beside a `current` symlink that is switched
// atomically by rename — the single commit point. Stages only into new folders; never touches the running one.
import { createHash, type Hash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { chmod, copyFile, mkdir, open, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from '../files/atomic-file.ts';
import type { Backend } from './backend.ts';
import { effectiveMode, within } from './offer.ts';

export class DirBackend implements Backend {
  readonly releases: string;
  readonly currentLink: string;

  constructor(
    readonly root: string,
    readonly keep: number,
  ) {
    this.releases = join(root, 'releases');
    this.currentLink = join(root, 'current');
    try {
      mkdirSync(this.releases, { recursive: true });
    } catch {} // reported clearly by stage(); the running release keeps running meanwhile
  }

  /** The version the `current` link points at, or null. */
  active(): string | null {
    try {
      const target = readlinkSync(this.currentLink);
      return target.split('/').pop() ?? null;
    } catch {
      return null;
    }
  }

  has(version: string): boolean {
    return existsSync(within(this.releases, version));
  }

  /**
   * Copies verified files into a fresh staging folder (moves the ones marked `move`: no second copy of a large
   * artifact), gives each its release file mode (masked to 0o755; 0o644 when the release carries none), then
   * renames the folder into place: the modes are set before any switch.
   */
  async stage(
    version: string,
    files: Array<{ name: string; path: string; mode?: number; move?: boolean }>,
  ): Promise<void> {
    // Every path checked before anything is written: a version or a name can never leave its folder.
    const dest = within(this.releases, version);
    const tmp = within(this.releases, `.staging-${version}-${process.pid}`);
    const copies = files.map((f, i) => ({
      from: f.path,
      to: within(tmp, f.name),
      mode: effectiveMode(f.mode),
      // The device's own download may be moved, unless another file of this release has the same bytes.
      move: f.move === true && !files.slice(i + 1).some((g) => g.path === f.path),
    }));
    try {
      rmSync(tmp, { recursive: true, force: true });
      await mkdir(tmp, { recursive: true });
      for (const f of copies) {
        await mkdir(dirname(f.to), { recursive: true });
        await (f.move ? moveFile(f.from, f.to) : copyFile(f.from, f.to));
        await chmod(f.to, f.mode); // explicit, so neither the blob cache's mode nor the umask decides
      }
      rmSync(dest, { recursive: true, force: true });
      renameSync(tmp, dest);
      fsyncDir(this.releases);
    } catch (e) {
      // Disk full, read-only or missing folder: only the staging copy is affected, never the running release.
      try {
        rmSync(tmp, { recursive: true, force: true });
      } catch {}
      throw new Error(`cannot stage ${version} in ${this.releases}: ${(e as Error).message}`);
    }
  }

  /** Atomically points `current` at a staged version (idempotent). */
  switchTo(version: string | null): void {
    if (version === null) {
      rmSync(this.currentLink, { force: true });
      fsyncDir(this.root);
      return;
    }
    if (!this.has(version)) throw new Error(`release ${version} is not staged`); // has(): within releases/
    const tmp = `${this.currentLink}.tmp-${process.pid}`;
    rmSync(tmp, { force: true });
    symlinkSync(join('releases', version), tmp);
    renameSync(tmp, this.currentLink);
    fsyncDir(this.root);
  }

  async activate(version: string): Promise<void> {
    this.switchTo(version);
  }

  async commit(): Promise<void> {}

  async rollback(to: string | null): Promise<void> {
    this.switchTo(to);
  }

  /** Removes staging leftovers and all but the newest `keep` inactive releases (never current/previous). */
  prune(protect: Array<string | null>): void {
    const keepSet = new Set(protect.filter((v): v is string => v !== null));
    const entries = readdirSync(this.releases, { withFileTypes: true });
    for (const e of entries)
      if (e.name.startsWith('.staging-'))
        rmSync(join(this.releases, e.name), { recursive: true, force: true });
    const others = entries
      .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !keepSet.has(e.name))
      .map((e) => e.name);
    others.sort();
    for (const name of others.slice(0, Math.max(0, others.length - this.keep)))
      rmSync(join(this.releases, name), { recursive: true, force: true });
  }
}

/**
 * Moves a file by rename (no bytes copied); across filesystems (the state folder and the component's folder on
 * different mounts) it copies instead and leaves the source.
 */
export async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(from, to);
  }
}

/** Read size for hashing files: one buffer reused for the whole file, so hashing makes no garbage. */
const HASH_CHUNK = 256 * 1024;

/** Feeds the first `limit` bytes of a file (the whole file by default) into `hash`; returns how many it read. */
export async function hashInto(hash: Hash, path: string, limit = Number.POSITIVE_INFINITY): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(HASH_CHUNK);
  let length = 0;
  try {
    for (;;) {
      const want = Math.min(HASH_CHUNK, limit - length);
      if (want <= 0) break;
      const { bytesRead } = await fh.read(buf, 0, want, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      length += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return length;
}

/** sha256 and length of a file, streamed through one reused buffer. */
export async function hashFile(path: string): Promise<{ sha256: string; length: number }> {
  const h = createHash('sha256');
  const length = await hashInto(h, path);
  return { sha256: h.digest('hex'), length };
}
