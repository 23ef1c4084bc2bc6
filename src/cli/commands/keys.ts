// `ringfence keys init | rotate-root | show`: the organisation's TUF keys and root metadata.
import { join } from 'node:path';
import type { Command } from 'commander';
import { withExamples } from '../../terminal/help.ts';
import { CliError, usageError } from '../client.ts';
import { printJson, printLine } from '../output.ts';

/** What the commands do their work with (TUF, the blob store), loaded when one runs so `--help` stays light. */
async function load() {
  const [
    { ensurePrivateDir },
    { generateKey, readRoleKeys, tightenKeyDir, writeKeyFile },
    { TufRepository },
  ] = await Promise.all([
    import('../../files/atomic-file.ts'),
    import('../../trust/signer/keys.ts'),
    import('../../trust/signer/tuf-repository.ts'),
  ]);
  return { TufRepository, ensurePrivateDir, generateKey, readRoleKeys, tightenKeyDir, writeKeyFile };
}

/**
 * The data folder holds the signing keys, the database and the blobs: private (0700) whichever command creates
 * it first. `keys init` may run before the server ever started, or on a folder made with a looser mode.
 */
async function privateDataDir(dir: string): Promise<void> {
  const { ensurePrivateDir, tightenKeyDir } = await load();
  try {
    ensurePrivateDir(dir);
    tightenKeyDir(join(dir, 'tuf', 'keys'));
  } catch (e) {
    throw new CliError(`${dir}: ${(e as Error).message}`);
  }
}

const int = (v: string, what: string) => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1)
    throw usageError(`${what} must be a positive integer`);
  return n;
};

export function keysCommands(program: Command): void {
  const keys = program.command('keys').description("the organisation's TUF keys and signed root");
  withExamples(keys, [
    'keys init --data /var/lib/ringfence',
    'keys show --data /var/lib/ringfence',
    'keys rotate-root --data /var/lib/ringfence --root-key-dir /media/ceremony',
  ]);
  const init = keys
    .command('init')
    .description('create the TUF root (k-of-n), targets, snapshot and timestamp keys; root.json v1 signed')
    .requiredOption(
      '--data <dir>',
      'server data folder (keys go to DIR/tuf/keys, metadata to DIR/tuf/metadata)',
    )
    .option('--root-keys <n>', 'number of root keys', '1')
    .option('--root-threshold <k>', 'root signatures required', '1')
    .option(
      '--root-key-dir <dir>',
      'write the root private keys here (offline medium) instead of the data folder',
    )
    .option('--json', 'machine-readable output')
    .action(
      async (o: {
        data: string;
        rootKeys: string;
        rootThreshold: string;
        rootKeyDir?: string;
        json?: boolean;
      }) => {
        const rootKeys = int(o.rootKeys, '--root-keys');
        const rootThreshold = int(o.rootThreshold, '--root-threshold');
        if (rootThreshold > rootKeys)
          throw usageError(`--root-threshold ${rootThreshold} is more than --root-keys ${rootKeys}`);
        const { TufRepository } = await load();
        await privateDataDir(o.data);
        let r: ReturnType<typeof TufRepository.init>;
        try {
          r = TufRepository.init(o.data, { rootKeys, rootThreshold, rootKeyDir: o.rootKeyDir });
        } catch (e) {
          throw new CliError((e as Error).message);
        }
        const out = {
          root_version: r.root.signed.version,
          root_threshold: `${r.root.signed.roles.root.threshold}-of-${r.root.signed.roles.root.keyIDs.length}`,
          keys: r.keys.map((k) => ({ role: k.role, keyid: k.keyid })),
          root_key_dir: o.rootKeyDir ?? r.repo.keyDir,
          metadata: r.repo.metadataDir,
        };
        if (o.json) return printJson(out);
        printLine(`TUF root v1 (${out.root_threshold}) written to ${out.metadata}/1.root.json`);
        for (const k of out.keys) printLine(`  ${k.role.padEnd(9)} ${k.keyid}`);
        printLine(`root private keys in ${out.root_key_dir}: move them offline (see docs/trust.md)`);
      },
    );
  withExamples(init, [
    'keys init --data /var/lib/ringfence',
    'keys init --data /srv/ringfence --root-keys 5 --root-threshold 3 --root-key-dir /media/ceremony   # 3-of-5, offline',
  ]);
  const rotate = keys
    .command('rotate-root')
    .description(
      'sign root N+1 with a threshold of the current root keys (and every new key); unlisted keys are revoked',
    )
    .requiredOption('--data <dir>', 'server data folder')
    .option('--root-key-dir <dir>', 'folder holding the current root keys (root-*.json)')
    .option(
      '--new-root-keys <n>',
      'generate this many fresh root keys for N+1 (default: keep the current ones)',
    )
    .option('--keep <keyids>', 'comma-separated current root key ids to keep alongside the new ones')
    .option('--root-threshold <k>', 'root threshold for N+1')
    .option('--rotate <roles>', 'also replace online keys: comma list of targets,snapshot,timestamp')
    .option('--json', 'machine-readable output')
    .action(
      async (o: {
        data: string;
        rootKeyDir?: string;
        newRootKeys?: string;
        keep?: string;
        rootThreshold?: string;
        rotate?: string;
        json?: boolean;
      }) => {
        // The command line first: nothing is read or written for a mistyped flag.
        const threshold = o.rootThreshold ? int(o.rootThreshold, '--root-threshold') : undefined;
        const newKeys = o.newRootKeys ? int(o.newRootKeys, '--new-root-keys') : 0;
        const rotate = (o.rotate ?? '').split(',').filter(Boolean) as Array<
          'targets' | 'snapshot' | 'timestamp'
        >;
        const unknown = rotate.filter((r) => !['targets', 'snapshot', 'timestamp'].includes(r));
        if (unknown.length)
          throw usageError(`--rotate: unknown role ${unknown.join(', ')} (targets, snapshot or timestamp)`);
        const { TufRepository, generateKey, readRoleKeys, writeKeyFile } = await load();
        const repo = TufRepository.open(o.data);
        if (!repo) throw new CliError(`no TUF repository in ${o.data}: run keys init first`);
        await privateDataDir(o.data);
        const keyDir = o.rootKeyDir ?? repo.keyDir;
        const current = readRoleKeys(keyDir, 'root');
        let next = current;
        if (newKeys) {
          const keep = new Set((o.keep ?? '').split(',').filter(Boolean));
          const fresh = Array.from({ length: newKeys }, () => generateKey('root'));
          const version = repo.root().signed.version + 1;
          fresh.forEach((k, i) => {
            writeKeyFile(keyDir, `root-v${version}-${i + 1}`, k);
          });
          next = [...current.filter((k) => keep.has(k.keyid)), ...fresh];
        }
        try {
          const root = await repo.rotateRoot({
            oldRootKeys: current,
            newRootKeys: next,
            threshold: threshold ?? Math.min(next.length, repo.root().signed.roles.root.threshold),
            rotateOnline: rotate,
          });
          const out = {
            root_version: root.signed.version,
            root_keys: root.signed.roles.root.keyIDs,
            threshold: root.signed.roles.root.threshold,
          };
          if (o.json) return printJson(out);
          printLine(
            `root v${out.root_version} signed (${out.threshold}-of-${out.root_keys.length}); devices follow the chain on their next check`,
          );
        } catch (e) {
          throw new CliError((e as Error).message);
        }
      },
    );
  withExamples(rotate, [
    'keys rotate-root --data /srv/ringfence --root-key-dir /media/ceremony',
    'keys rotate-root --data /srv/ringfence --root-key-dir /media/ceremony --new-root-keys 2 --keep KEYID --root-threshold 2',
    'keys rotate-root --data /srv/ringfence --rotate timestamp,snapshot   # replace online keys too',
  ]);
  const show = keys
    .command('show')
    .description('the current root: version, expiry, keys per role')
    .requiredOption('--data <dir>', 'server data folder')
    .option('--json', 'machine-readable output')
    .action(async (o: { data: string; json?: boolean }) => {
      const { TufRepository } = await load();
      const repo = TufRepository.open(o.data);
      if (!repo) throw new CliError(`no TUF repository in ${o.data}: run keys init first`);
      const root = repo.root().signed;
      const out = {
        version: root.version,
        expires: root.expires,
        roles: Object.fromEntries(
          Object.entries(root.roles).map(([name, r]) => [name, { threshold: r.threshold, keyids: r.keyIDs }]),
        ),
        timestamp_version: repo.timestamp().signed.version,
        targets: Object.keys(repo.targets().signed.targets).length,
      };
      if (o.json) return printJson(out);
      printLine(`root v${out.version}, expires ${out.expires}; ${out.targets} signed targets`);
      for (const [n, r] of Object.entries(out.roles))
        printLine(`  ${n.padEnd(9)} ${r.threshold}-of-${r.keyids.length}`);
    });
  withExamples(show, ['keys show --data /var/lib/ringfence', 'keys show --data /var/lib/ringfence --json']);
}
