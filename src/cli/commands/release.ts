// `ringfence release import | approve | list`.
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import type { ReleaseView } from '../../server/routes/admin-releases.ts';
import { api, CliError, type Conn } from '../client.ts';
import { printJson, printTable } from '../output.ts';

/** Expands paths into (artifact name, file) pairs: a folder contributes its files by relative path. */
export function collectFiles(paths: string[]): Array<{ name: string; path: string }> {
  const out: Array<{ name: string; path: string }> = [];
  for (const p of paths) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch {
      throw new CliError(`no such file or folder: ${p}`);
    }
    if (st.isFile()) out.push({ name: basename(p), path: p });
    else if (st.isDirectory()) {
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          const full = join(dir, e.name);
          if (e.isDirectory()) walk(full);
          else if (e.isFile()) out.push({ name: relative(p, full).split('\\').join('/'), path: full });
        }
      };
      walk(p);
    }
  }
  if (out.length === 0) throw new CliError('nothing to import: no files found');
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** Uploads files as blobs and registers the release. */
export async function importRelease(
  conn: Conn,
  component: string,
  version: string,
  paths: string[],
  provenance: Record<string, unknown> = {},
) {
  const files = collectFiles(paths);
  const artifacts = [];
  for (const f of files) {
    const body = Readable.toWeb(createReadStream(f.path)) as unknown as Uint8Array;
    const blob = await api<{ sha256: string; length: number }>(conn, 'POST', '/v1/admin/blobs', body);
    artifacts.push({ name: f.name, sha256: blob.sha256, length: blob.length });
  }
  await api(conn, 'POST', '/v1/admin/releases', { component, version, artifacts, provenance });
  return { component, version, artifacts };
}

export function releaseCommands(program: Command, conn: () => Conn): void {
  const release = program.command('release').description('immutable releases of components');
  release
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
    .option('--json', 'machine-readable output')
    .action(
      async (
        paths: string[],
        o: {
          component: string;
          version: string;
          json?: boolean;
          vendorSig?: string;
          vendorKey?: string;
          vendorTuf?: string;
          vendorRoot?: string;
          vendorName?: string;
          vendorTargetPrefix: string;
        },
      ) => {
        // Vendor authenticity is checked before anything is uploaded; the result goes into the audited provenance.
        let vendor: Record<string, unknown> | undefined;
        if (o.vendorSig || o.vendorKey) {
          if (!o.vendorSig || !o.vendorKey) throw new CliError('--vendor-sig and --vendor-key go together');
          const { verifyVendorRelease } = await import('../../trust/vendor.ts');
          try {
            vendor = { ...(await verifyVendorRelease(collectFiles(paths), o.vendorSig, o.vendorKey)) };
          } catch (e) {
            throw new CliError(`refused: ${(e as Error).message}`);
          }
        }
        // Dual control: the vendor's own TUF metadata must list every file (checked before any upload); the
        // metadata is then stored on the server for devices that pin the vendor's root.
        let vendorTuf:
          | Awaited<ReturnType<typeof import('../../trust/vendor-tuf.ts').verifyVendorTuf>>
          | undefined;
        if (o.vendorTuf || o.vendorRoot || o.vendorName) {
          if (!o.vendorTuf || !o.vendorRoot || !o.vendorName)
            throw new CliError('--vendor-tuf, --vendor-root and --vendor-name go together');
          const { verifyVendorTuf } = await import('../../trust/vendor-tuf.ts');
          try {
            vendorTuf = await verifyVendorTuf({
              vendor: o.vendorName,
              source: o.vendorTuf,
              rootFile: o.vendorRoot,
              component: o.component,
              version: o.version,
              files: collectFiles(paths),
              prefix: o.vendorTargetPrefix,
            });
          } catch (e) {
            throw new CliError(`refused: ${(e as Error).message.split('\n')[0]}`);
          }
        }
        const c = conn();
        if (vendorTuf) {
          const files = Object.fromEntries(
            Object.entries(vendorTuf.metadata).map(([n, b]) => [n, b.toString('base64')]),
          );
          await api(c, 'PUT', `/v1/admin/vendor-tuf/${encodeURIComponent(vendorTuf.provenance.vendor)}`, {
            files,
            release: `${o.component}@${o.version}`,
          });
        }
        const r = await importRelease(c, o.component, o.version, paths, {
          imported_by: process.env.USER ?? 'unknown',
          ...(vendor ? { vendor } : {}),
          ...(vendorTuf ? { vendor_tuf: vendorTuf.provenance } : {}),
        });
        if (o.json) printJson(r);
        else console.log(`imported ${r.component}@${r.version} (${r.artifacts.length} files)`);
      },
    );
  release
    .command('approve')
    .description('approve NAME@V: only approved releases can reach devices')
    .argument('<ref>', 'NAME@VERSION')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { json?: boolean }) => {
      const r = await api(conn(), 'POST', `/v1/admin/releases/${encodeURIComponent(ref)}/approve`, {});
      if (o.json) printJson(r);
      else console.log(`approved ${ref}`);
    });
  release
    .command('list')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const rows = await api<ReleaseView[]>(conn(), 'GET', '/v1/admin/releases');
      if (o.json) return printJson(rows);
      printTable(
        rows.map((r) => ({
          release: `${r.component}@${r.version}`,
          files: r.artifacts.length,
          bytes: r.artifacts.reduce((s, a) => s + a.length, 0),
          approved: r.approved ? 'yes' : 'no',
          created: new Date(r.created_at).toISOString(),
        })),
        ['release', 'files', 'bytes', 'approved', 'created'],
      );
    });
}
