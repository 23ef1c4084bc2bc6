// `ringfence server` and `ringfence agent` (daemon and local control without any server).
import type { Command } from 'commander';
import pino from 'pino';
import { Agent } from '../../agent/agent.ts';
import { loadAgentConfig } from '../../agent/config.ts';
import { CliError } from '../client.ts';
import { printJson } from '../output.ts';

export function serverCommand(program: Command): void {
  program
    .command('server')
    .description('run the patch server')
    .requiredOption('--data <dir>', 'data folder (database, blobs, keys)')
    .option('--port <n>', 'port', '8080')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--database <url>', 'postgres://… for scale-out (default: SQLite in the data folder)')
    .option('--poll <seconds>', 'check-in interval told to agents', '30')
    .action(async (o: { data: string; port: string; host: string; database?: string; poll: string }) => {
      // Loaded on demand: agents and light commands start without the server's dependencies.
      const { createServer } = await import('../../server/app.ts');
      const srv = await createServer({
        dataDir: o.data,
        databaseUrl: o.database ?? process.env.RINGFENCE_DATABASE,
        pollSeconds: Number(o.poll),
        initialAdminToken: process.env.RINGFENCE_INITIAL_ADMIN_TOKEN,
      });
      if (srv.newAdminToken) {
        process.stderr.write(`admin token (shown once, store it safely): ${srv.newAdminToken}\n`);
      }
      const address = await srv.app.listen({ port: Number(o.port), host: o.host });
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
      const cfg = loadAgentConfig(o.config);
      const log = pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'info' }).child({
        agent: cfg.name ?? 'agent',
      });
      const a = new Agent(cfg, log);
      process.once('SIGTERM', () => a.stop());
      process.once('SIGINT', () => a.stop());
      await a.run();
    });
  agent
    .command('status')
    .requiredOption('--config <file>')
    .option('--json', 'machine-readable output')
    .action(async (o: { config: string; json?: boolean }) => {
      const a = new Agent(loadAgentConfig(o.config), pino({ level: 'silent' }));
      const s = a.status() as {
        identity: string | null;
        outbox: number;
        components: Array<Record<string, unknown>>;
      };
      if (o.json) return printJson(s);
      console.log(`device ${s.identity ?? '(not enrolled)'}; ${s.outbox} reports waiting to be sent`);
      for (const c of s.components) {
        console.log(
          `${c.component}: ${c.current ?? '-'} (active ${c.active ?? '-'})${c.hold ? ' HELD' : ''}${c.pin ? ` pinned ${c.pin}` : ''}${(c.quarantined as string[]).length ? ` quarantined ${(c.quarantined as string[]).join(',')}` : ''}${c.txn ? ` txn ${(c.txn as { phase: string }).phase}` : ''}`,
        );
      }
    });
  for (const [name, desc] of [
    ['hold', 'hold every component (or --component): nothing new is applied'],
    ['unhold', 'release a local hold'],
  ] as const) {
    agent
      .command(name)
      .description(desc)
      .requiredOption('--config <file>')
      .option('--component <name>')
      .action(async (o: { config: string; component?: string }) => {
        const a = new Agent(loadAgentConfig(o.config), pino({ level: 'silent' }));
        for (const c of a.cfg.components) {
          if (o.component && c.name !== o.component) continue;
          a.journal.write({ ...a.journal.read(c.name), hold: name === 'hold' });
          console.log(`${c.name}: ${name === 'hold' ? 'held' : 'released'}`);
        }
      });
  }
}
