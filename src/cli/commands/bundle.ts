// `ringfence bundle export FILE [NAME@V...] | import FILE`: offline transfer of signed releases (air gap, USB).
// Both work on a server data folder directly, so they need no network at all.
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import { appendAudit } from '../../store/audit.ts';
import { BlobStore } from '../../store/blobs.ts';
import { type BundleRelease, exportBundle, importBundle } from '../../trust/bundle.ts';
import { Repository } from '../../trust/repository.ts';
import { CliError } from '../client.ts';
import { printJson } from '../output.ts';

const same = (a: BundleRelease['artifacts'], b: BundleRelease['artifacts']) =>
  JSON.stringify([...a].sort((x, y) => x.name.localeCompare(y.name))) ===
  JSON.stringify([...b].sort((x, y) => x.name.localeCompare(y.name)));

/** Registers verified bundle releases as approved; existing identical releases are left alone. */
export async function registerBundleReleases(
  dataDir: string,
  releases: BundleRelease[],
  opts: { databaseUrl?: string; file: string; dryRun?: boolean; now?: number },
): Promise<string[]> {
  // Loaded on demand: the database drivers are not needed by the rest of the CLI.
  const { openStore } = await import('../../store/database.ts');
  const store = await openStore({ dataDir, url: opts.databaseUrl });
  const added: string[] = [];
  try {
    await store.db.transaction().execute(async (tx) => {
      const now = opts.now ?? Date.now();
      for (const r of releases) {
        const row = await tx
          .selectFrom('releases')
          .select(['id', 'artifacts', 'approved_at'])
          .where('component', '=', r.component)
          .where('version', '=', r.version)
          .executeTakeFirst();
        if (row) {
          if (!same(JSON.parse(row.artifacts), r.artifacts))
            throw new Error(
              `${r.component}@${r.version} exists here with other content; releases are immutable`,
            );
          continue;
        }
        if (opts.dryRun) continue;
        await tx
          .insertInto('releases')
          .values({
            component: r.component,
            version: r.version,
            artifacts: JSON.stringify(r.artifacts),
            provenance: JSON.stringify({ bundle: opts.file, imported_by: process.env.USER ?? 'unknown' }),
            created_at: now,
            approved_at: now,
            approved_by: 'bundle (organisation-signed targets)',
          })
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: process.env.USER ?? 'cli',
          action: 'release.imported-from-bundle',
          subject: `release/${r.component}@${r.version}`,
          detail: { bundle: opts.file, artifacts: r.artifacts },
        });
        added.push(`${r.component}@${r.version}`);
      }
    });
  } finally {
    await store.close();
  }
  return added;
}

export function bundleCommands(program: Command): void {
  const bundle = program.command('bundle').description('offline bundles of signed releases');
  bundle
    .command('export')
    .description('write one file with TUF metadata, blobs, a checksum manifest and a completion marker')
    .argument('<file>', 'bundle file to write')
    .argument('[refs...]', 'NAME@VERSION (default: every signed release)')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--valid-for <duration>', 'keep the metadata valid for the journey (e.g. 30d)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, refs: string[], o: { data: string; validFor?: string; json?: boolean }) => {
      const repo = Repository.open(o.data);
      if (!repo) throw new CliError(`no TUF repository in ${o.data}: run keys init first`);
      try {
        const m = await exportBundle(repo, new BlobStore(join(o.data, 'blobs')), file, {
          refs,
          validForMs: o.validFor ? parseDuration(o.validFor) : undefined,
        });
        const out = {
          file,
          bytes: m.bytes,
          releases: m.releases.map((r) => `${r.component}@${r.version}`),
          expires: m.expires,
        };
        if (o.json) return printJson(out);
        console.log(
          `wrote ${file}: ${out.releases.length} releases, ${out.bytes} bytes, valid until ${out.expires}`,
        );
      } catch (e) {
        throw new CliError((e as Error).message);
      }
    });
  bundle
    .command('import')
    .description('verify a bundle completely, then add its blobs, metadata and releases')
    .argument('<file>', 'bundle file')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--root <file>', "the organisation's root.json v1, when this server has none yet")
    .option('--database <url>', 'postgres://… (default: SQLite in the data folder)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: { data: string; root?: string; database?: string; json?: boolean }) => {
      try {
        const dbUrl = o.database ?? process.env.RINGFENCE_DATABASE;
        const r = await importBundle(file, o.data, new BlobStore(join(o.data, 'blobs')), {
          pinnedRoot: o.root,
          precheck: async (rels) => {
            await registerBundleReleases(o.data, rels, { databaseUrl: dbUrl, file, dryRun: true });
          },
        });
        const added = await registerBundleReleases(o.data, r.releases, { databaseUrl: dbUrl, file });
        const out = { ...r, releases: r.releases.map((x) => `${x.component}@${x.version}`), added };
        if (o.json) return printJson(out);
        console.log(
          `verified and imported ${out.releases.length} releases (${r.bytes} bytes); new: ${added.join(', ') || 'none'}`,
        );
      } catch (e) {
        throw new CliError(`bundle refused: ${(e as Error).message}`);
      }
    });
}
