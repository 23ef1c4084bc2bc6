// `ringfence server` and `ringfence agent` (daemon and local control without any server).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { Agent } from '../../agent/agent.ts';
import { loadAgentConfig } from '../../agent/config.ts';
import { CliError } from '../client.ts';
import { printJson, printLine } from '../output.ts';

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
      const { loadServerConfig, limitsOf } = await import('../../server/config.ts');
      const { config, file, created } = loadServerConfig(o.data);
      const port = Number(o.port ?? config.port);
      const poll = Number(o.poll ?? config.poll_seconds);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`invalid port "${o.port}"`);
      if (!Number.isInteger(poll) || poll < 1) throw new CliError(`invalid --poll "${o.poll}"`);
      const tls = tlsFiles(o, config.tls, o.data);
      let srv: Awaited<ReturnType<typeof createServer>>;
      try {
        srv = await createServer({
          dataDir: o.data,
          databaseUrl: o.database ?? process.env.RINGFENCE_DATABASE ?? config.database ?? undefined,
          pollSeconds: poll,
          initialAdminToken: process.env.RINGFENCE_INITIAL_ADMIN_TOKEN,
          limits: limitsOf(config),
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

export function agentCommand(program: Command): void {
  const agent = program
    .command('agent')
    .description('run the device agent, or control it locally')
    .option('--config <file>', 'agent config YAML')
    .action(async (o: { config?: string }) => {
      if (!o.config) throw new CliError('agent needs --config FILE');
      const cfg = loadAgentConfig(configOf(o));
      const log = pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'info' }).child({
        agent: cfg.name ?? 'agent',
      });
      const a = new Agent(cfg, log);
      process.once('SIGTERM', () => a.stop());
      process.once('SIGINT', () => a.stop());
      await a.run();
    });
  // `agent status --config F`: commander hands --config to the parent `agent` command, so look there as well.
  const configOf = (o: { config?: string }): string => {
    const file = o.config ?? (agent.opts() as { config?: string }).config;
    if (!file) throw new CliError('needs --config FILE');
    return file;
  };
  agent
    .command('status')
    .option('--config <file>', 'agent config YAML')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const a = new Agent(loadAgentConfig(configOf(o)), pino({ level: 'silent' }));
      const s = a.status() as {
        identity: string | null;
        outbox: number;
        components: Array<Record<string, unknown>>;
      };
      if (o.json) return printJson(s);
      printLine(`device ${s.identity ?? '(not enrolled)'}; ${s.outbox} reports waiting to be sent`);
      for (const c of s.components) {
        printLine(
          `${c.component}: ${c.current ?? '-'} (active ${c.active ?? '-'})${c.hold ? ' HELD' : ''}${c.pin ? ` pinned ${c.pin}` : ''}${(c.quarantined as string[]).length ? ` quarantined ${(c.quarantined as string[]).join(',')}` : ''}${c.txn ? ` txn ${(c.txn as { phase: string }).phase}` : ''}`,
        );
      }
    });
  agent
    .command('boot-guard')
    .description(
      'run once early at boot, before the managed service: count an attempt, roll back past max_attempts',
    )
    .option('--config <file>', 'agent config YAML')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const cfg = loadAgentConfig(configOf(o));
      const a = new Agent(
        cfg,
        pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'warn' }).child({ boot_guard: true }),
      );
      const done = await a.bootGuard();
      if (o.json) return printJson(done);
      for (const d of done) {
        const j = a.journal.read(d.component);
        printLine(
          `${d.component}: ${d.action === 'none' ? 'nothing to guard' : d.action}${j.txn ? ` (txn ${j.txn.phase}, attempt ${j.txn.attempts} of ${cfg.components.find((c) => c.name === d.component)?.max_attempts})` : ''}; running ${j.current ?? '-'}`,
        );
      }
    });
  const local = (o: { config?: string }) =>
    new Agent(loadAgentConfig(configOf(o)), pino({ level: 'silent' }));
  const oneComponent = (a: Agent, component?: string): string => {
    if (component) return component;
    if (a.cfg.components.length === 1) return a.cfg.components[0].name;
    throw new CliError('several components: name one with --component NAME');
  };
  agent
    .command('rollback')
    .description(
      'put a component back on the release before it (works with no server); quarantines the one taken out',
    )
    .option('--config <file>', 'agent config YAML')
    .option('--component <name>')
    .action(async (o: { config?: string; component?: string }) => {
      const a = local(o);
      const name = oneComponent(a, o.component);
      try {
        const j = await a.localRollback(name);
        printLine(`${name}: rolled back to ${j.current ?? '-'}; quarantined ${j.quarantined.join(',')}`);
      } catch (e) {
        throw new CliError((e as Error).message);
      }
    });
  agent
    .command('pin')
    .description('pin a component to NAME@V on this device: wins over the server')
    .option('--config <file>', 'agent config YAML')
    .argument('<release>', 'NAME@V')
    .action(async (ref: string, o: { config?: string }) => {
      const at = ref.lastIndexOf('@');
      if (at <= 0) throw new CliError(`expected NAME@V, got "${ref}"`);
      const a = local(o);
      try {
        a.setPin(ref.slice(0, at), ref.slice(at + 1));
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      printLine(`${ref.slice(0, at)}: pinned to ${ref.slice(at + 1)}`);
    });
  agent
    .command('unpin')
    .description('remove a local pin')
    .option('--config <file>', 'agent config YAML')
    .option('--component <name>')
    .action(async (o: { config?: string; component?: string }) => {
      const a = local(o);
      const name = oneComponent(a, o.component);
      a.setPin(name, null);
      printLine(`${name}: unpinned`);
    });
  agent
    .command('clear-quarantine')
    .description('allow quarantined releases (all, or --release V) to be applied again')
    .option('--config <file>', 'agent config YAML')
    .option('--component <name>')
    .option('--release <v>', 'only this version')
    .action(async (o: { config?: string; component?: string; release?: string }) => {
      const a = local(o);
      const name = oneComponent(a, o.component);
      const j = a.clearQuarantine(name, o.release);
      printLine(`${name}: quarantine ${j.quarantined.length ? `now ${j.quarantined.join(',')}` : 'cleared'}`);
    });
  agent
    .command('apply-bundle')
    .description(
      'verify and apply an offline bundle with no server (pinned TUF root; local holds and pins obeyed); the report is sent at the next check-in',
    )
    .argument('<file>', 'bundle written by `ringfence bundle export`')
    .option('--config <file>', 'agent config YAML')
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: { config?: string; json?: boolean }) => {
      const cfg = loadAgentConfig(configOf(o));
      const a = new Agent(cfg, pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'warn' }));
      let res: Awaited<ReturnType<Agent['applyBundle']>>;
      try {
        res = await a.applyBundle(file);
      } catch (e) {
        throw new CliError(`bundle refused: ${(e as Error).message}`);
      }
      if (res.some((r) => r.outcome === 'refused' || r.outcome === 'rolled-back')) process.exitCode = 1;
      if (o.json) return printJson(res);
      if (!res.length) printLine('the bundle holds no release for a component of this device');
      for (const r of res)
        printLine(
          `${r.component}${r.version ? `@${r.version}` : ''}: ${r.outcome}${r.class ? ` [${r.class}]` : ''}${r.reason ? `: ${r.reason}` : ''}`,
        );
    });
  for (const [name, desc] of [
    ['hold', 'hold every component (or --component): nothing new is applied'],
    ['unhold', 'release a local hold'],
  ] as const) {
    agent
      .command(name)
      .description(desc)
      .option('--config <file>', 'agent config YAML')
      .option('--component <name>')
      .action(async (o: { config?: string; component?: string }) => {
        const a = new Agent(loadAgentConfig(configOf(o)), pino({ level: 'silent' }));
        for (const c of a.cfg.components) {
          if (o.component && c.name !== o.component) continue;
          a.journal.write({ ...a.journal.read(c.name), hold: name === 'hold' });
          printLine(`${c.name}: ${name === 'hold' ? 'held' : 'released'}`);
        }
      });
  }
}
