// `repo export`: the repository as a static tree with the same layout as /v1/tuf/ on the server
// (N.root.json, timestamp.json, N.snapshot.json, N.targets.json, targets/<dir>/<sha256>.<name>),
// so any plain HTTP server or mirror can serve it and devices verify it as if it came from the server.
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { fsyncDir, writeFileAtomicSync } from '../../files/atomic-file.ts';
import type { BlobStore } from '../../server/blobs.ts';
import type { TufRepository } from '../signer/tuf-repository.ts';

export interface ExportResult {
  dir: string;
  metadata: number;
  targets: number;
  bytes: number;
  missing: string[];
  expires: string;
}

/** The hash-prefixed location of a target inside the tree, as tuf-js computes it. */
export function hashedTargetPath(path: string, sha256: string): string {
  const dir = posix.dirname(path);
  const base = `${sha256}.${posix.basename(path)}`;
  return dir === '.' ? base : `${dir}/${base}`;
}

/**
 * Writes the tree. A new folder is built beside the destination and renamed into place; an existing mirror is
 * updated in place with targets first and timestamp.json last, so a client never sees metadata whose targets
 * are not there yet. `only` limits which target blobs are copied (bundles of a few releases).
 */
export async function exportTree(
  repo: TufRepository,
  blobs: BlobStore,
  dest: string,
  opts: { now?: number; validForMs?: number; only?: (path: string) => boolean } = {},
): Promise<ExportResult> {
  const now = opts.now ?? Date.now();
  await repo.freshen(now, opts.validForMs);
  const out = resolve(dest);
  const fresh = !existsSync(out);
  const work = fresh ? `${out}.partial-${process.pid}` : out;
  rmSync(fresh ? work : join(out, '.none'), { recursive: true, force: true });
  mkdirSync(join(work, 'targets'), { recursive: true });
  const res: ExportResult = { dir: out, metadata: 0, targets: 0, bytes: 0, missing: [], expires: '' };
  const targets = repo.targets().signed.targets;
  for (const [path, t] of Object.entries(targets)) {
    if (opts.only && !opts.only(path)) continue;
    const sha = t.hashes.sha256;
    if (!blobs.has(sha)) {
      res.missing.push(path);
      continue;
    }
    const file = join(work, 'targets', hashedTargetPath(path, sha));
    mkdirSync(dirname(file), { recursive: true });
    if (!existsSync(file)) copyFileSync(blobs.path(sha), file);
    res.targets++;
    res.bytes += t.length;
  }
  const names = repo.files().sort((a, b) => Number(a === 'timestamp.json') - Number(b === 'timestamp.json'));
  for (const name of names) {
    writeFileAtomicSync(join(work, name), repo.file(name)!);
    res.metadata++;
  }
  res.expires = repo.timestamp().signed.expires;
  if (fresh) {
    renameSync(work, out);
    fsyncDir(dirname(out));
  }
  return res;
}
