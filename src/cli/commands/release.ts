// `ringfence release import | approve | list`.
import { constants, lstatSync, readdirSync, realpathSync, type Stats, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { MODE_MASK } from '../../protocol/names.ts';
import type { ReleaseView } from '../../server/services/releases.ts';
import { withExamples } from '../../terminal/help.ts';
import { type ProgressUpdate, progressReporter } from '../../terminal/progress.ts';
import { api, CliError, type Conn, usageError } from '../client.ts';
import { printJson, printLine, printTable } from '../output.ts';

export interface CollectOptions {
  /** Import what symbolic links point to (regular files and folders only); default: refuse symbolic links. */
  followSymlinks?: boolean;
}

const kindOf = (st: Stats) =>
  st.isFIFO()
    ? 'a FIFO'
    : st.isSocket()
      ? 'a socket'
      : st.isCharacterDevice()
        ? 'a character device'
        : st.isBlockDevice()
          ? 'a block device'
          : 'a special file';

/**
 * The type of a path under the symlink policy: a regular file or a folder, or a one-line CliError. Symbolic links
 * are refused unless followed; followed ones must end at a regular file or folder (not a loop, not dangling).
 */
function inspect(p: string, follow: boolean): Stats {
  let st: Stats;
  try {
    st = lstatSync(p);
  } catch {
    throw new CliError(`no such file or folder: ${p}`);
  }
  if (st.isSymbolicLink()) {
    if (!follow)
      throw new CliError(
        `refused: ${p} is a symbolic link (pass --follow-symlinks to import what it points to)`,
      );
    try {
      st = statSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw new CliError(`refused: ${p} is a symbolic link loop`);
      if (code === 'ENOENT') throw new CliError(`refused: ${p} is a broken symbolic link`);
      throw new CliError(`refused: cannot follow ${p}: ${(e as Error).message}`);
    }
  }
  if (!st.isFile() && !st.isDirectory())
    throw new CliError(`refused: ${p} is ${kindOf(st)}, not a regular file or folder`);
  return st;
}

/**
 * Expands paths into (artifact name, file) pairs: a folder contributes its files by relative path. Every entry
 * must be a regular file or a folder: symbolic links (unless `followSymlinks`), FIFOs, sockets and devices are
 * refused with a one-line CliError instead of being skipped, so a release is never silently incomplete.
 */
export function collectFiles(
  paths: string[],
  opts: CollectOptions = {},
): Array<{ name: string; path: string }> {
  const follow = opts.followSymlinks === true;
  const out: Array<{ name: string; path: string }> = [];
  for (const p of paths) {
    if (inspect(p, follow).isFile()) {
      out.push({ name: basename(p), path: p });
      continue;
    }
    const walking = new Set<string>(); // real paths of the folders being walked: a link back into one is a loop
    const walk = (dir: string) => {
      const real = realpathSync(dir);
      if (walking.has(real))
        throw new CliError(`refused: ${dir} is a symbolic link loop (it leads back to ${real})`);
      walking.add(real);
      for (const e of readdirSync(dir).sort()) {
        const full = join(dir, e);
        if (inspect(full, follow).isDirectory()) walk(full);
        else out.push({ name: relative(p, full).split(sep).join('/'), path: full });
      }
      walking.delete(real);
    };
    walk(p);
  }
  if (out.length === 0) throw new CliError('nothing to import: no files found');
  out.sort((a, b) => a.name.localeCompare(b.name));
  for (let i = 1; i < out.length; i++)
    if (out[i].name === out[i - 1].name)
      throw new CliError(
        `refused: ${out[i - 1].path} and ${out[i].path} would both be imported as ${out[i].name}`,
      );
  return out;
}

/**
 * Opens a collected file for upload and checks, on the open descriptor, that it is still a regular file (it may
 * have been swapped for a FIFO or a link since it was collected). O_NONBLOCK: opening a FIFO must not hang.
 */
async function openRegular(path: string, follow: boolean) {
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | (follow ? 0 : constants.O_NOFOLLOW);
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, flags);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(
      code === 'ELOOP'
        ? `refused: ${path} is a symbolic link (pass --follow-symlinks to import what it points to)`
        : `cannot open ${path}: ${(e as Error).message}`,
    );
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new CliError(`refused: ${path} is ${kindOf(st)}, not a regular file`);
  }
  return { fh, mode: releaseMode(st.mode) };
}

/**
 * The file mode a release records for a file: its permission bits masked to 0o755, so the executable bits
 * travel (a `health.sh` stays runnable on devices) but never setuid, setgid, sticky, or group/other write.
 */
export function releaseMode(stMode: number): number {
  return stMode & MODE_MASK;
}

export interface ImportOptions extends CollectOptions {
  /** Called as bytes are read into the upload and as each file is stored; for a display. */
  onProgress?: (p: ProgressUpdate) => void;
}

/** The sizes of collected files, for the progress total (a file that cannot be read counts 0: open says why). */
function totalSize(files: Array<{ path: string }>): number {
  let n = 0;
  for (const f of files)
    try {
      n += statSync(f.path).size;
    } catch {}
  return n;
}

/** Uploads collected files as blobs and registers the release. */
export async function importFiles(
  conn: Conn,
  component: string,
  version: string,
  files: Array<{ name: string; path: string }>,
  provenance: Record<string, unknown> = {},
  opts: ImportOptions = {},
) {
  const progress = opts.onProgress;
  const step = { phase: 'uploading', bytes: 0, totalBytes: 0, files: 0, totalFiles: files.length };
  if (progress) {
    step.totalBytes = totalSize(files);
    progress({ ...step });
  }
  const artifacts = [];
  for (const f of files) {
    // The mode is read from the descriptor that is uploaded, so it belongs to exactly these bytes.
    const { fh, mode } = await openRegular(f.path, opts.followSymlinks === true);
    let body = Readable.toWeb(fh.createReadStream()) as unknown as ReadableStream<Uint8Array>;
    if (progress)
      body = body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, out) {
            step.bytes += chunk.byteLength;
            progress({ ...step });
            out.enqueue(chunk);
          },
        }),
      );
    const blob = await api<{ sha256: string; length: number }>(conn, 'POST', '/v1/admin/blobs', body);
    artifacts.push({ name: f.name, sha256: blob.sha256, length: blob.length, mode });
    step.files++;
    progress?.({ ...step });
  }
  await api(conn, 'POST', '/v1/admin/releases', { component, version, artifacts, provenance });
  return { component, version, artifacts };
}

/** Uploads files (or folders) as blobs and registers the release. */
export async function importRelease(
  conn: Conn,
  component: string,
  version: string,
  paths: string[],
  provenance: Record<string, unknown> = {},
  opts: ImportOptions = {},
) {
  return importFiles(conn, component, version, collectFiles(paths, opts), provenance, opts);
}

/** What is waiting for whose approval (four eyes), as the server reports it on releases and rollouts. */
export interface AwaitingApproval {
  what: string;
  /** The operator who may not approve it (imported or started it), or null: any approver may. */
  by_anyone_but: string | null;
}

/** Who imported a release, and whether it waits for an approval. */
interface Governed {
  imported_by?: string | null;
  awaiting_approval?: AwaitingApproval | null;
}

/** "approval by anyone but alice" or "approval by any approver", for people. */
export function awaitingLabel(a: AwaitingApproval): string {
  return a.by_anyone_but ? `approval by anyone but ${a.by_anyone_but}` : 'approval by any approver';
}

export function releaseCommands(program: Command, conn: () => Conn): void {
  const release = program.command('release').description('immutable releases of components');
  withExamples(release, [
    'release import --component app --version 1.2.0 ./build/app',
    'release approve app@1.2.0',
    'release list --json',
  ]);
  const importCmd = release
    .command('import')
    .description('store files (or folders) as a release')
    .requiredOption('--component <name>', 'component name')
    .requiredOption('--version <v>', 'release version')
    .argument('<paths...>', 'files or folders')
    .option('--vendor-sig <file>', "vendor's ed25519 detached signature (over SHA256SUMS or the single file)")
    .option('--vendor-key <file>', "vendor's ed25519 public key (PEM or minisign)")
    .option(
      '--vendor-tuf <dir|url>',
      "vendor's TUF repository: every file must be in its signed targets (dual control)",
    )
    .option('--vendor-root <file>', "vendor's pinned TUF root (with --vendor-tuf)")
    .option('--vendor-name <name>', 'vendor name devices refer to in trust.vendors (with --vendor-tuf)')
    .option(
      '--vendor-target-prefix <p>',
      'where the vendor lists the files: prefix + name; {component} and {version} are replaced',
      '{component}/{version}/',
    )
    .option(
      '--follow-symlinks',
      'import what symbolic links point to (default: refuse them); FIFOs, sockets and devices are always refused',
    )
    .option('--json', 'machine-readable output')
    .action(
      async (
        paths: string[],
        o: {
          component: string;
          version: string;
          json?: boolean;
          followSymlinks?: boolean;
          vendorSig?: string;
          vendorKey?: string;
          vendorTuf?: string;
          vendorRoot?: string;
          vendorName?: string;
          vendorTargetPrefix: string;
        },
      ) => {
        // The command line first: flags that only work together.
        if (!o.vendorSig !== !o.vendorKey) throw usageError('--vendor-sig and --vendor-key go together');
        if (!o.vendorTuf !== !o.vendorRoot || !o.vendorTuf !== !o.vendorName)
          throw usageError('--vendor-tuf, --vendor-root and --vendor-name go together');
        // Every file is checked (regular files only) before any vendor check or upload.
        const collect = { followSymlinks: o.followSymlinks === true };
        const files = collectFiles(paths, collect);
        // Vendor authenticity is checked before anything is uploaded; the result goes into the audited provenance.
        let vendor: Record<string, unknown> | undefined;
        if (o.vendorSig && o.vendorKey) {
          const { verifyVendorRelease } = await import('../../trust/signer/vendor.ts');
          try {
            vendor = { ...(await verifyVendorRelease(files, o.vendorSig, o.vendorKey)) };
          } catch (e) {
            throw new CliError(`refused: ${(e as Error).message}`);
          }
        }
        // Dual control: the vendor's own TUF metadata must list every file (checked before any upload); the
        // metadata is then stored on the server for devices that pin the vendor's root.
        let vendorTuf:
          | Awaited<ReturnType<typeof import('../../trust/signer/vendor-import.ts').verifyVendorTuf>>
          | undefined;
        if (o.vendorTuf && o.vendorRoot && o.vendorName) {
          const { verifyVendorTuf } = await import('../../trust/signer/vendor-import.ts');
          try {
            vendorTuf = await verifyVendorTuf({
              vendor: o.vendorName,
              source: o.vendorTuf,
              rootFile: o.vendorRoot,
              component: o.component,
              version: o.version,
              files,
              prefix: o.vendorTargetPrefix,
            });
          } catch (e) {
            throw new CliError(`refused: ${(e as Error).message.split('\n')[0]}`);
          }
        }
        const c = conn();
        if (vendorTuf) {
          const metadata = Object.fromEntries(
            Object.entries(vendorTuf.metadata).map(([n, b]) => [n, b.toString('base64')]),
          );
          // With the operator's root: the server pins it on the vendor's first upload, or checks it belongs to the
          // chain it pinned, and verifies the whole set again before storing anything.
          await api(c, 'PUT', `/v1/admin/vendor-tuf/${encodeURIComponent(vendorTuf.provenance.vendor)}`, {
            files: metadata,
            root: vendorTuf.root.toString('base64'),
            release: `${o.component}@${o.version}`,
          });
        }
        const progress = progressReporter('release import', { json: o.json });
        let r: Awaited<ReturnType<typeof importFiles>>;
        try {
          r = await importFiles(
            c,
            o.component,
            o.version,
            files,
            {
              imported_by: process.env.USER ?? 'unknown',
              ...(vendor ? { vendor } : {}),
              ...(vendorTuf ? { vendor_tuf: vendorTuf.provenance } : {}),
            },
            { ...collect, onProgress: progress.enabled ? progress.update : undefined },
          );
        } catch (e) {
          progress.clear();
          throw e;
        }
        progress.done();
        if (o.json) printJson(r);
        else printLine(`imported ${r.component}@${r.version} (${r.artifacts.length} files)`);
      },
    );
  withExamples(importCmd, [
    'release import --component app --version 1.2.0 ./build/app   # a folder: every file, by relative path',
    'release import --component sensor-content --version 2.1.0 content.bin --vendor-sig content.bin.sig --vendor-key vendor.pub',
    'release import --component os --version 2026.1 ./os --vendor-tuf https://vendor.example/tuf --vendor-root vendor-root.json --vendor-name acme',
  ]);
  const approve = release
    .command('approve')
    .description('approve NAME@V: only approved releases can reach devices')
    .argument('<ref>', 'NAME@VERSION')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { json?: boolean }) => {
      const r = await api(conn(), 'POST', `/v1/admin/releases/${encodeURIComponent(ref)}/approve`, {});
      if (o.json) printJson(r);
      else printLine(`approved ${ref}`);
    });
  withExamples(approve, ['release approve app@1.2.0', 'release approve sensor-content@2.1.0 --json']);
  const list = release
    .command('list')
    .description('releases: files, size, approval, who imported them and what waits for approval')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const rows = await api<Array<ReleaseView & Governed>>(conn(), 'GET', '/v1/admin/releases');
      if (o.json) return printJson(rows);
      printTable(
        rows.map((r) => ({
          release: `${r.component}@${r.version}`,
          files: r.artifacts.length,
          bytes: r.artifacts.reduce((s, a) => s + a.length, 0),
          approved: r.approved ? 'yes' : 'no',
          'imported by': r.imported_by,
          waiting: r.awaiting_approval ? awaitingLabel(r.awaiting_approval) : null,
          created: new Date(r.created_at).toISOString(),
        })),
        ['release', 'files', 'bytes', 'approved', 'imported by', 'waiting', 'created'],
      );
    });
  withExamples(list, ['release list', 'release list --json']);
}
