// `ringfence agent …` and the device build's `ringfence-agent …`: the daemon, the boot guard and the local
// controls that work with no server. Mounted by the CLI (src/cli/main.ts) and by the single-file agent
// (src/agent/main.ts) alike, so the two cannot drift apart; nothing here loads the CLI or the server.
import type { Command } from 'commander';
import { printJson, printLine } from '../terminal/output.ts';
import type { Agent } from './agent.ts';

/**
 * The agent's runtime, loaded only when a command runs: `ringfence --help` and `--version` then start without
 * the agent, its schemas and its logger (test/cli-startup.test.ts).
 */
async function runtime() {
  const [{ default: pino }, { Agent }, { loadAgentConfig }] = await Promise.all([
    import('pino'),
    import('./agent.ts'),
    import('./config.ts'),
  ]);
  return { pino, Agent, loadAgentConfig };
}

/** A refused agent command: both entries print its one-line message and exit with 1. */
export class AgentCommandError extends Error {}

/** Mounts `agent` (the daemon) and its local-control subcommands on a commander program. */
export function agentCommand(program: Command): void {
  const agent = program
    .command('agent')
    .description('run the device agent, or control it locally')
    .option('--config <file>', 'agent config YAML')
    .action(async (o: { config?: string }) => {
      if (!o.config) throw new AgentCommandError('agent needs --config FILE');
      const { pino, Agent, loadAgentConfig } = await runtime();
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
    const file = o.config ?? agent.opts<{ config?: string }>().config;
    if (!file) throw new AgentCommandError('needs --config FILE');
    return file;
  };
  agent
    .command('status')
    .option('--config <file>', 'agent config YAML')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const a = await local(o);
      const s = a.status();
      if (o.json) return printJson(s);
      printLine(`device ${s.identity ?? '(not enrolled)'}; ${s.outbox} reports waiting to be sent`);
      for (const c of s.components) {
        printLine(
          `${c.component}: ${c.current ?? '-'} (active ${c.active ?? '-'})${c.hold ? ' HELD' : ''}${c.pin ? ` pinned ${c.pin}` : ''}${c.quarantined.length ? ` quarantined ${c.quarantined.join(',')}` : ''}${c.txn ? ` txn ${c.txn.phase}` : ''}`,
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
      const { pino, Agent, loadAgentConfig } = await runtime();
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
  const local = async (o: { config?: string }): Promise<Agent> => {
    const { pino, Agent, loadAgentConfig } = await runtime();
    return new Agent(loadAgentConfig(configOf(o)), pino({ level: 'silent' }));
  };
  const oneComponent = (a: Agent, component?: string): string => {
    if (component) return component;
    if (a.cfg.components.length === 1) return a.cfg.components[0].name;
    throw new AgentCommandError('several components: name one with --component NAME');
  };
  agent
    .command('rollback')
    .description(
      'put a component back on the release before it (works with no server); quarantines the one taken out',
    )
    .option('--config <file>', 'agent config YAML')
    .option('--component <name>')
    .action(async (o: { config?: string; component?: string }) => {
      const a = await local(o);
      const name = oneComponent(a, o.component);
      try {
        const j = await a.localRollback(name);
        printLine(`${name}: rolled back to ${j.current ?? '-'}; quarantined ${j.quarantined.join(',')}`);
      } catch (e) {
        throw new AgentCommandError((e as Error).message);
      }
    });
  agent
    .command('pin')
    .description('pin a component to NAME@V on this device: wins over the server')
    .option('--config <file>', 'agent config YAML')
    .argument('<release>', 'NAME@V')
    .action(async (ref: string, o: { config?: string }) => {
      const at = ref.lastIndexOf('@');
      if (at <= 0) throw new AgentCommandError(`expected NAME@V, got "${ref}"`);
      const a = await local(o);
      try {
        a.setPin(ref.slice(0, at), ref.slice(at + 1));
      } catch (e) {
        throw new AgentCommandError((e as Error).message);
      }
      printLine(`${ref.slice(0, at)}: pinned to ${ref.slice(at + 1)}`);
    });
  agent
    .command('unpin')
    .description('remove a local pin')
    .option('--config <file>', 'agent config YAML')
    .option('--component <name>')
    .action(async (o: { config?: string; component?: string }) => {
      const a = await local(o);
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
      const a = await local(o);
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
      const { pino, Agent, loadAgentConfig } = await runtime();
      const cfg = loadAgentConfig(configOf(o));
      const a = new Agent(cfg, pino({ level: process.env.RINGFENCE_LOG_LEVEL ?? 'warn' }));
      let res: Awaited<ReturnType<Agent['applyBundle']>>;
      try {
        res = await a.applyBundle(file);
      } catch (e) {
        throw new AgentCommandError(`bundle refused: ${(e as Error).message}`);
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
        const a = await local(o);
        for (const c of a.cfg.components) {
          if (o.component && c.name !== o.component) continue;
          a.journal.write({ ...a.journal.read(c.name), hold: name === 'hold' });
          printLine(`${c.name}: ${name === 'hold' ? 'held' : 'released'}`);
        }
      });
  }
}
