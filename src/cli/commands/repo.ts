// `ringfence repo export DIR | gc | serve DIR`: the signed repository as a static tree for any plain HTTP mirror.
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import { withExamples } from '../../terminal/help.ts';
import { CliError, usageError } from '../client.ts';
import { printJson, printLine } from '../output.ts';

/** What the commands do their work with (TUF, the blob store), loaded when one runs so `--help` stays light. */
async function load() {
  const [{ BlobStore }, { exportTree }, { serveStatic }, { TufRepository }] = await Promise.all([
    import('../../server/blobs.ts'),
    import('../../trust/ops/export.ts'),
    import('../../trust/ops/static-server.ts'),
    import('../../trust/signer/tuf-repository.ts'),
  ]);
  return { BlobStore, TufRepository, exportTree, serveStatic };
}

export function repoCommands(program: Command): void {
  const repo = program.command('repo').description('the signed (TUF) repository');
  withExamples(repo, [
    'repo export /srv/mirror --data /var/lib/ringfence --valid-for 30d',
    'repo gc --data /var/lib/ringfence --dry-run',
    'repo serve /srv/mirror --port 8081',
  ]);
  const exportCmd = repo
    .command('export')
    .description('write metadata and hash-prefixed targets as a static tree (same layout as /v1/tuf/)')
    .argument('<dir>', 'destination folder')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--valid-for <duration>', 'keep the metadata valid at least this long (e.g. 30d)')
    .option('--json', 'machine-readable output')
    .action(async (dir: string, o: { data: string; validFor?: string; json?: boolean }) => {
      let validForMs: number | undefined;
      try {
        validForMs = o.validFor === undefined ? undefined : parseDuration(o.validFor);
      } catch (e) {
        throw usageError(`--valid-for: ${(e as Error).message}`);
      }
      const { BlobStore, TufRepository, exportTree } = await load();
      const r = TufRepository.open(o.data);
      if (!r) throw new CliError(`no TUF repository in ${o.data}: run keys init first`);
      const res = await exportTree(r, new BlobStore(join(o.data, 'blobs')), dir, { validForMs });
      if (o.json) return printJson(res);
      printLine(
        `exported ${res.metadata} metadata files and ${res.targets} targets (${res.bytes} bytes) to ${res.dir}; valid until ${res.expires}`,
      );
      if (res.missing.length) printLine(`missing blobs (not exported): ${res.missing.join(', ')}`);
    });
  withExamples(exportCmd, [
    'repo export /srv/mirror --data /var/lib/ringfence',
    'repo export /srv/mirror --data /var/lib/ringfence --valid-for 30d --json',
  ]);
  const gc = repo
    .command('gc')
    .description('free blobs of releases no rollout, pin or device references (newest per component kept)')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--database <url>', 'postgres://… (default: SQLite in the data folder)')
    .option('--dry-run', 'report only')
    .option('--json', 'machine-readable output')
    .action(async (o: { data: string; database?: string; dryRun?: boolean; json?: boolean }) => {
      const { BlobStore } = await load();
      // Loaded on demand: the database drivers are not needed by the rest of the CLI.
      const { openStore } = await import('../../server/db/database.ts');
      const { collectGarbage } = await import('../../server/services/release-gc.ts');
      const store = await openStore({ dataDir: o.data, url: o.database ?? process.env.RINGFENCE_DATABASE });
      try {
        const r = await collectGarbage(store.db, new BlobStore(join(o.data, 'blobs')), o.data, {
          dryRun: o.dryRun,
        });
        if (o.json) return printJson(r);
        printLine(
          `${o.dryRun ? 'would free' : 'freed'} ${r.bytes_freed} bytes in ${r.blobs_freed} blobs; withdrew ${r.dropped.length} releases (${r.dropped.join(', ') || 'none'}); kept ${r.kept.length}`,
        );
      } finally {
        await store.close();
      }
    });
  withExamples(gc, [
    'repo gc --data /var/lib/ringfence --dry-run   # what would be freed',
    'repo gc --data /var/lib/ringfence --database postgres://ringfence@db/ringfence',
  ]);
  const serve = repo
    .command('serve')
    .description('serve an exported tree over plain HTTP (a minimal mirror)')
    .argument('<dir>', 'exported folder')
    .option('--port <n>', 'port', '8081')
    .option('--host <addr>', 'address', '127.0.0.1')
    .action(async (dir: string, o: { port: string; host: string }) => {
      const port = Number(o.port);
      if (!/^\d+$/.test(o.port) || port > 65535) throw usageError('--port must be a port number 0–65535');
      const { serveStatic } = await load();
      const s = await serveStatic(dir, { port, host: o.host });
      printLine(`serving ${dir} at ${s.url}`);
    });
  withExamples(serve, ['repo serve /srv/mirror', 'repo serve /srv/mirror --host 0.0.0.0 --port 8081']);
}
