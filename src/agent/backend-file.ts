// The `file` apply backend: one file (a configuration or content/definition file) replaced atomically by
// rename. Versions are kept beside it in .<name>.rf/<version>, so the previous one can be put back.
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fsyncDir } from '../files/atomic-file.ts';
import type { Backend } from './backend.ts';
import { moveFile } from './backend-dir.ts';
import { effectiveMode, within } from './offer.ts';

/** sha256 of a file through one reused buffer: a large file is never read into memory whole. */
function digest(path: string): string {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(256 * 1024);
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

export class FileBackend implements Backend {
  readonly store: string;

  constructor(
    readonly target: string,
    readonly keep: number,
  ) {
    this.store = join(dirname(target), `.${basename(target)}.rf`);
  }

  /** The kept version whose bytes the target holds now (the file itself is the truth, not a side note). */
  active(): string | null {
    if (!existsSync(this.target) || !existsSync(this.store)) return null;
    const live = digest(this.target);
    for (const v of readdirSync(this.store))
      if (!v.startsWith('.') && digest(join(this.store, v)) === live) return v;
    return null;
  }

  /**
   * Keeps the version's bytes in the store (moved there when marked `move`: the device's own download) with its
   * release file mode (masked to 0o755; 0o644 without one).
   */
  async stage(
    version: string,
    files: Array<{ name: string; path: string; mode?: number; move?: boolean }>,
  ): Promise<void> {
    if (files.length !== 1) throw new Error(`file backend takes exactly one artifact, got ${files.length}`);
    const tmp = within(this.store, `.staging-${version}-${process.pid}`);
    const dest = within(this.store, version);
    try {
      mkdirSync(this.store, { recursive: true });
      if (files[0].move) await moveFile(files[0].path, tmp);
      else copyFileSync(files[0].path, tmp);
      chmodSync(tmp, effectiveMode(files[0].mode));
      renameSync(tmp, dest);
      fsyncDir(this.store);
    } catch (e) {
      throw new Error(`cannot stage ${version} beside ${this.target}: ${(e as Error).message}`);
    }
  }

  /**
   * Replaces the target atomically: a temp file beside it with the staged bytes and the staged version's mode
   * (chmod before the rename, so the file never appears with another mode), fsync, rename, directory fsync.
   */
  async activate(version: string): Promise<void> {
    const src = within(this.store, version);
    if (!existsSync(src)) throw new Error(`release ${version} is not staged`);
    // An unpredictable name, created exclusively: the target's folder may be writable by others, and a name they
    // could guess (and pre-create as a symlink) would redirect this write.
    const tmp = join(
      dirname(this.target),
      `.${basename(this.target)}.${randomBytes(8).toString('hex')}.rf-tmp`,
    );
    try {
      copyFileSync(src, tmp, constants.COPYFILE_EXCL);
      chmodSync(tmp, effectiveMode(statSync(src).mode & 0o777)); // never more than 0o755
      const fd = openSync(tmp, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.target);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
    fsyncDir(dirname(this.target));
  }

  async commit(): Promise<void> {}

  async rollback(to: string | null): Promise<void> {
    if (to === null) {
      rmSync(this.target, { force: true });
      fsyncDir(dirname(this.target));
      return;
    }
    await this.activate(to);
  }

  prune(protect: Array<string | null>): void {
    if (!existsSync(this.store)) return;
    const keepSet = new Set(protect.filter((v): v is string => v !== null));
    const entries = readdirSync(this.store);
    for (const e of entries) if (e.startsWith('.staging-')) rmSync(join(this.store, e), { force: true });
    const others = entries.filter((e) => !e.startsWith('.') && !keepSet.has(e)).sort();
    for (const name of others.slice(0, Math.max(0, others.length - this.keep)))
      rmSync(join(this.store, name), { force: true });
  }
}
