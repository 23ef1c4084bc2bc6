// `ringfence bundle export FILE [NAME@V...] | import FILE`: offline transfer of signed releases (air gap, USB).
// Both work on a server data folder directly, so they need no network at all.
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import type { Db } from '../../server/db/database.ts';
import { withExamples } from '../../terminal/help.ts';
import { progressReporter } from '../../terminal/progress.ts';
import type { BundleRelease } from '../../trust/verifier/bundle-reader.ts';
import { CliError, usageError } from '../client.ts';
import { printJson, printLine } from '../output.ts';

/** What the commands do their work with (TUF, the blob store), loaded when one runs so `--help` stays light. */
async function load() {
  const [{ BlobStore }, { exportBundle }, { importBundle }, { TufRepository }] = await Promise.all([
    import('../../server/blobs.ts'),
    import('../../trust/ops/bundle-export.ts'),
    import('../../trust/ops/bundle-import.ts'),
    import('../../trust/signer/tuf-repository.ts'),
  ]);
  return { BlobStore, TufRepository, exportBundle, importBundle };
}

/** Opens the server's store in a data folder (loaded on demand: the CLI's other commands need no drivers). */
async function withStore<T>(
  dataDir: string,
  databaseUrl: string | undefined,
  fn: (db: Db) => Promise<T>,
): Promise<T> {
  const { openStore } = await import('../../server/db/database.ts');
  const store = await openStore({ dataDir, url: databaseUrl });
  try {
    return await fn(store.db);
  } finally {
    await store.close();
  }
}

/** Registers verified bundle releases as approved (the release service); existing identical ones are left alone. */
export async function registerBundleReleases(
  dataDir: string,
  releases: BundleRelease[],
  opts: { databaseUrl?: string; file: string; dryRun?: boolean; now?: number },
): Promise<string[]> {
  const service = await import('../../server/services/releases.ts');
  return withStore(dataDir, opts.databaseUrl, (db) =>
    service.registerBundleReleases(db, releases, {
      file: opts.file,
      user: process.env.USER,
      dryRun: opts.dryRun,
      now: opts.now ?? Date.now(),
    }),
  );
}

/** Whether any release in the database lists a blob (kept when a refused import is undone). */
async function blobReferenced(
  dataDir: string,
  databaseUrl: string | undefined,
  sha256: string,
): Promise<boolean> {
  const { blobInUse } = await import('../../server/services/releases.ts');
  return withStore(dataDir, databaseUrl, (db) => blobInUse(db, sha256));
}

/** A duration flag (`--valid-for 30d`); a bad one is a usage error. */
function durationFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  try {
    return parseDuration(v);
  } catch (e) {
    throw usageError(`${flag}: ${(e as Error).message}`);
  }
}

export function bundleCommands(program: Command): void {
  const bundle = program.command('bundle').description('offline bundles of signed releases');
  withExamples(bundle, [
    'bundle export /media/usb/2026-03.rfb app@1.2.0 --data /var/lib/ringfence --valid-for 30d',
    'bundle import /media/usb/2026-03.rfb --data /var/lib/ringfence',
  ]);
  const exportCmd = bundle
    .command('export')
    .description('write one file with TUF metadata, blobs, a checksum manifest and a completion marker')
    .argument('<file>', 'bundle file to write')
    .argument('[refs...]', 'NAME@VERSION (default: every signed release)')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--valid-for <duration>', 'keep the metadata valid for the journey (e.g. 30d)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, refs: string[], o: { data: string; validFor?: string; json?: boolean }) => {
      const validForMs = durationFlag('--valid-for', o.validFor);
      for (const r of refs)
        if (r.indexOf('@') <= 0 || r.endsWith('@')) throw usageError(`expected NAME@VERSION, got "${r}"`);
      const { BlobStore, TufRepository, exportBundle } = await load();
      const repo = TufRepository.open(o.data);
      if (!repo) throw new CliError(`no TUF repository in ${o.data}: run keys init first`);
      const progress = progressReporter('bundle export', { json: o.json });
      try {
        const m = await exportBundle(repo, new BlobStore(join(o.data, 'blobs')), file, {
          refs,
          validForMs,
          onProgress: progress.enabled ? progress.update : undefined,
        });
        progress.done();
        const out = {
          file,
          bytes: m.bytes,
          releases: m.releases.map((r) => `${r.component}@${r.version}`),
          expires: m.expires,
        };
        if (o.json) return printJson(out);
        printLine(
          `wrote ${file}: ${out.releases.length} releases, ${out.bytes} bytes, valid until ${out.expires}`,
        );
      } catch (e) {
        progress.clear();
        throw new CliError((e as Error).message);
      }
    });
  withExamples(exportCmd, [
    'bundle export /media/usb/2026-03.rfb --data /var/lib/ringfence   # every signed release',
    'bundle export site-b.rfb app@1.2.0 sensor-content@2.1.0 --data /var/lib/ringfence --valid-for 30d',
  ]);
  const importCmd = bundle
    .command('import')
    .description('verify a bundle completely, then add its blobs, metadata and releases (all or nothing)')
    .argument('<file>', 'bundle file')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--root <file>', "the organisation's root.json v1, when this server has none yet")
    .option(
      '--vendor-root <vendor=file>',
      "a vendor's TUF root to pin, for a vendor whose metadata this server has not stored yet (repeatable)",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--skip-vendor-tuf', "do not import the vendors' metadata the bundle carries")
    .option('--database <url>', 'postgres://… (default: SQLite in the data folder)')
    .option('--json', 'machine-readable output')
    .action(
      async (
        file: string,
        o: {
          data: string;
          root?: string;
          vendorRoot: string[];
          skipVendorTuf?: boolean;
          database?: string;
          json?: boolean;
        },
      ) => {
        const { BlobStore, importBundle } = await load();
        const vendorRoots: Record<string, string> = Object.create(null);
        for (const v of o.vendorRoot) {
          const i = v.indexOf('=');
          if (i <= 0 || i === v.length - 1) throw usageError(`--vendor-root expects VENDOR=FILE, got "${v}"`);
          vendorRoots[v.slice(0, i)] = v.slice(i + 1);
        }
        const progress = progressReporter('bundle import', { json: o.json });
        try {
          const dbUrl = o.database ?? process.env.RINGFENCE_DATABASE;
          const r = await importBundle(file, o.data, new BlobStore(join(o.data, 'blobs')), {
            onProgress: progress.enabled ? progress.update : undefined,
            pinnedRoot: o.root,
            vendorRoots,
            skipVendorTuf: o.skipVendorTuf,
            precheck: async (rels) => {
              await registerBundleReleases(o.data, rels, { databaseUrl: dbUrl, file, dryRun: true });
            },
            // The database transaction is the commit point: if it fails, the import removes what it wrote.
            register: (rels) => registerBundleReleases(o.data, rels, { databaseUrl: dbUrl, file }),
            isReferenced: (sha) => blobReferenced(o.data, dbUrl, sha),
          });
          progress.done();
          const out = { ...r, releases: r.releases.map((x) => `${x.component}@${x.version}`) };
          if (o.json) return printJson(out);
          printLine(
            `verified and imported ${out.releases.length} releases (${r.bytes} bytes); new: ${r.added.join(', ') || 'none'}`,
          );
        } catch (e) {
          progress.clear();
          throw new CliError(`bundle refused: ${(e as Error).message.replace(/\s+/g, ' ').trim()}`);
        }
      },
    );
  withExamples(importCmd, [
    'bundle import /media/usb/2026-03.rfb --data /var/lib/ringfence',
    'bundle import site-b.rfb --data /srv/branch --root 1.root.json --vendor-root acme=acme-root.json   # first import',
  ]);
}
