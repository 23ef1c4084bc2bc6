// `ringfence server` (the agent's commands live in src/agent/commands.ts).
import { existsSync, fstatSync, linkSync, readFileSync, unlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { withExamples } from '../../terminal/help.ts';
import { CliError, usageError } from '../client.ts';

interface ServerFlags {
  data: string;
  port?: string;
  host?: string;
  database?: string;
  poll?: string;
  tlsCert?: string;
  tlsKey?: string;
  adminTokenFile?: string;
}

/** The certificate and key to serve HTTPS with (flags win over server.yaml), read now so a bad path fails fast. */
function tlsFiles(
  o: ServerFlags,
  fromConfig: { cert: string; key: string } | null,
  dataDir: string,
): { cert: Buffer; key: Buffer } | undefined {
  if (!o.tlsCert !== !o.tlsKey) throw usageError('--tls-cert and --tls-key go together');
  const files = o.tlsCert && o.tlsKey ? { cert: o.tlsCert, key: o.tlsKey } : fromConfig;
  if (!files) return undefined;
  // Paths in server.yaml are relative to the data folder; flags are relative to the working directory.
  const at = (f: string) => (fromConfig === files ? resolve(dataDir, f) : resolve(f));
  const read = (f: string, what: string) => {
    try {
      return readFileSync(at(f));
    } catch (e) {
      throw new CliError(`cannot read the TLS ${what} ${f}: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
  };
  return { cert: read(files.cert, 'certificate'), key: read(files.key, 'key') };
}

/**
 * Whether stderr goes to the systemd journal, which keeps every line and lets the adm group read it. systemd sets
 * JOURNAL_STREAM to the stream's "device:inode"; a child whose stderr went elsewhere may inherit the variable, so
 * the stream itself is compared, as systemd.exec(5) recommends.
 */
function stderrIsJournal(): boolean {
  const m = /^(\d+):(\d+)$/.exec(process.env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

/** Where the first admin token goes instead of stderr: --admin-token-file, or DATA/initial-admin-token under journald. */
function adminTokenFileOf(o: ServerFlags): string | undefined {
  if (o.adminTokenFile) return resolve(o.adminTokenFile);
  return stderrIsJournal() ? resolve(o.data, 'initial-admin-token') : undefined;
}

/**
 * The first admin token, made here and written to a pending file beside its destination *before* the server may
 * store it: whatever fails later (the destination exists, the server does not start), the token is never stored
 * without being on disk. Published with link(), which refuses to replace an existing file.
 */
async function stageAdminToken(file: string) {
  const { writeFileAtomicSync, fsyncDir } = await import('../../files/atomic-file.ts');
  const { newToken } = await import('../../server/tokens.ts');
  const token = newToken('adm');
  const pending = `${file}.${process.pid}.pending`;
  try {
    writeFileAtomicSync(pending, `${token}\n`, 0o600);
  } catch (e) {
    // A restart with a read-only folder is fine: the file was written at the first start.
    if (existsSync(file)) return undefined;
    throw new CliError(
      `cannot write the admin token file ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`,
    );
  }
  return {
    token,
    publish() {
      try {
        linkSync(pending, file);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new CliError(
          code === 'EEXIST'
            ? `${file} already exists and was not replaced; the new admin token is in ${pending}`
            : `cannot write the admin token file ${file}: ${code ?? e}; the new admin token is in ${pending}`,
        );
      }
      unlinkSync(pending);
      fsyncDir(dirname(file));
    },
    discard() {
      try {
        unlinkSync(pending);
      } catch {} // already gone
    },
  };
}

export function serverCommand(program: Command): void {
  const server = program
    .command('server')
    .description('run the patch server')
    .requiredOption('--data <dir>', 'data folder (database, blobs, keys)')
    .option('--port <n>', 'port (default 8080, or server.yaml)')
    .option('--host <addr>', 'address to listen on (default 127.0.0.1, or server.yaml)')
    .option('--database <url>', 'postgres://… for scale-out (default: SQLite in the data folder)')
    .option('--poll <seconds>', 'check-in interval told to agents (default 30, or server.yaml)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate chain (or server.yaml tls.cert)')
    .option('--tls-key <file>', 'the PEM private key for --tls-cert (or server.yaml tls.key)')
    .option(
      '--admin-token-file <path>',
      'write the first admin token to this new file (mode 0600) instead of stderr (under systemd: DATA/initial-admin-token)',
    )
    .action(async (o: ServerFlags) => {
      // Loaded on demand: agents and light commands start without the server's dependencies.
      const { createServer } = await import('../../server/app.ts');
      const { loadServerConfig, limitsOf, governanceOf, oidcOf, fleetLockOf, prometheusOf } = await import(
        '../../server/config.ts'
      );
      const { config, file, created } = loadServerConfig(o.data);
      const port = Number(o.port ?? config.port);
      const poll = Number(o.poll ?? config.poll_seconds);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw usageError(`invalid port "${o.port}"`);
      if (!Number.isInteger(poll) || poll < 1) throw usageError(`invalid --poll "${o.poll}"`);
      const tls = tlsFiles(o, config.tls, o.data);
      let oidc: ReturnType<typeof oidcOf>;
      let fleetLock: ReturnType<typeof fleetLockOf>;
      let prometheus: ReturnType<typeof prometheusOf>;
      try {
        oidc = oidcOf(config, o.data);
        fleetLock = fleetLockOf(config, o.data);
        prometheus = prometheusOf(config, o.data);
      } catch (e) {
        throw new CliError(`${file}: ${(e as Error).message}`);
      }
      const envToken = process.env.RINGFENCE_INITIAL_ADMIN_TOKEN;
      const tokenFile = envToken === undefined ? adminTokenFileOf(o) : undefined;
      const staged = tokenFile ? await stageAdminToken(tokenFile) : undefined;
      let srv: Awaited<ReturnType<typeof createServer>>;
      try {
        srv = await createServer({
          dataDir: o.data,
          databaseUrl: o.database ?? process.env.RINGFENCE_DATABASE ?? config.database ?? undefined,
          pollSeconds: poll,
          // A token file that cannot be staged (it exists in a read-only folder) is fine on a restart, but a new
          // database must not get an admin whose token nobody can read: null refuses that.
          initialAdminToken: envToken ?? (tokenFile && !staged ? null : staged?.token),
          limits: limitsOf(config),
          governance: governanceOf(config),
          oidc,
          fleetLock,
          prometheus,
          webhooks: { publicUrl: config.public_url },
          tls,
        });
      } catch (e) {
        staged?.discard();
        throw new CliError((e as Error).message);
      }
      if (created) srv.ctx.log.info({ file }, 'wrote default server configuration');
      if (staged && srv.adminTokenFromEnv) {
        // Our token became the admin's: this is the first start.
        try {
          staged.publish();
        } catch (e) {
          await srv.close();
          throw e;
        }
        process.stderr.write(
          `admin token written to ${tokenFile} (mode 0600; store it safely, then delete the file)\n`,
        );
      } else if (staged) {
        staged.discard(); // not the first start: the admin exists, nothing to write
      } else if (srv.newAdminToken) {
        process.stderr.write(`admin token (shown once, store it safely): ${srv.newAdminToken}\n`);
      } else if (srv.adminTokenFromEnv) {
        process.stderr.write('admin token set from RINGFENCE_INITIAL_ADMIN_TOKEN (not shown)\n');
      }
      const address = await srv.app.listen({ port, host: o.host ?? config.host });
      srv.ctx.log.info({ address }, 'ringfence server listening');
      const shutdown = async (sig: string) => {
        srv.ctx.log.info({ sig }, 'shutting down');
        await srv.close();
        process.exit(0);
      };
      process.once('SIGTERM', () => void shutdown('SIGTERM'));
      process.once('SIGINT', () => void shutdown('SIGINT'));
    });
  withExamples(server, [
    'server --data /var/lib/ringfence-server  # SQLite and blobs in the data folder, on 127.0.0.1:8080',
    'server --data ./data --host 0.0.0.0 --port 8443 --tls-cert cert.pem --tls-key key.pem',
    'server --data ./data --database postgres://ringfence@db/ringfence  # a replica of a scaled-out server',
  ]);
}
