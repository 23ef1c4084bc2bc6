// `ringfence server` (the agent's commands live in src/agent/commands.ts).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CliError } from '../client.ts';

interface ServerFlags {
  data: string;
  port?: string;
  host?: string;
  database?: string;
  poll?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The certificate and key to serve HTTPS with (flags win over server.yaml), read now so a bad path fails fast. */
function tlsFiles(
  o: ServerFlags,
  fromConfig: { cert: string; key: string } | null,
  dataDir: string,
): { cert: Buffer; key: Buffer } | undefined {
  if (!o.tlsCert !== !o.tlsKey) throw new CliError('--tls-cert and --tls-key go together');
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

export function serverCommand(program: Command): void {
  program
    .command('server')
    .description('run the patch server')
    .requiredOption('--data <dir>', 'data folder (database, blobs, keys)')
    .option('--port <n>', 'port (default 8080, or server.yaml)')
    .option('--host <addr>', 'address to listen on (default 127.0.0.1, or server.yaml)')
    .option('--database <url>', 'postgres://… for scale-out (default: SQLite in the data folder)')
    .option('--poll <seconds>', 'check-in interval told to agents (default 30, or server.yaml)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate chain (or server.yaml tls.cert)')
    .option('--tls-key <file>', 'the PEM private key for --tls-cert (or server.yaml tls.key)')
    .action(async (o: ServerFlags) => {
      // Loaded on demand: agents and light commands start without the server's dependencies.
      const { createServer } = await import('../../server/app.ts');
      const { loadServerConfig, limitsOf, governanceOf, oidcOf } = await import('../../server/config.ts');
      const { config, file, created } = loadServerConfig(o.data);
      const port = Number(o.port ?? config.port);
      const poll = Number(o.poll ?? config.poll_seconds);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`invalid port "${o.port}"`);
      if (!Number.isInteger(poll) || poll < 1) throw new CliError(`invalid --poll "${o.poll}"`);
      const tls = tlsFiles(o, config.tls, o.data);
      let oidc: ReturnType<typeof oidcOf>;
      try {
        oidc = oidcOf(config, o.data);
      } catch (e) {
        throw new CliError(`${file}: ${(e as Error).message}`);
      }
      let srv: Awaited<ReturnType<typeof createServer>>;
      try {
        srv = await createServer({
          dataDir: o.data,
          databaseUrl: o.database ?? process.env.RINGFENCE_DATABASE ?? config.database ?? undefined,
          pollSeconds: poll,
          initialAdminToken: process.env.RINGFENCE_INITIAL_ADMIN_TOKEN,
          limits: limitsOf(config),
          governance: governanceOf(config),
          oidc,
          tls,
        });
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      if (created) srv.ctx.log.info({ file }, 'wrote default server configuration');
      if (srv.newAdminToken) {
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
}
