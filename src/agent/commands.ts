// `ringfence agent …` and the device build's `ringfence-agent …`: the daemon, the boot guard and the local
// controls that work with no server. Mounted by the CLI (src/cli/main.ts) and by the single-file agent
// (src/agent/main.ts) alike, so the two cannot drift apart; nothing here loads the CLI or the server.
import { type Command, CommanderError, Option } from 'commander';
import { withExamples } from '../terminal/help.ts';
import { printErrorLine, printJson, printLine } from '../terminal/output.ts';
import type { Agent } from './agent.ts';
import { BACKENDS, DEFAULT_CONFIG_FILE, DEFAULT_STATE_DIR, type InitFlags } from './config-template.ts';

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

/**
 * A usage error (a bad flag or argument): exit code 2 in both entries. Printed here, then thrown as a
 * CommanderError, which the CLI (src/cli/run.ts) and the device build (main.ts) both treat as already printed.
 */
function usage(cmd: Command, message: string): never {
  let root = cmd;
  while (root.parent) root = root.parent;
  printErrorLine(`${root.name()}: ${message}`);
  throw new CommanderError(2, 'ringfence.usage', message);
}

/** Mounts `agent` (the daemon) and its local-control subcommands on a commander program. */
export function agentCommand(program: Command): void {
  // The device build's program is the agent itself (`ringfence-agent status`); the CLI mounts it as `agent`.
  const sub = program.name() === 'ringfence-agent' ? '' : 'agent ';
  const examples = (cmd: Command, lines: string[]) =>
    withExamples(
      cmd,
      lines.map((l) => `${sub}${l}`),
    );
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
  examples(agent, [
    '--config /etc/ringfence/agent.yaml  # the daemon: check in, apply, check, commit or roll back',
  ]);
  // `agent status --config F`: commander hands --config to the parent `agent` command, so look there as well.
  const configOf = (o: { config?: string }): string => {
    const file = o.config ?? agent.opts<{ config?: string }>().config;
    if (!file) throw new AgentCommandError('needs --config FILE');
    return file;
  };
  const status = agent
    .command('status')
    .description('what this device runs, per component: release, hold, pin, quarantine, open transaction')
    .option('--config <file>', 'agent config YAML')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const a = await local(o);
      const s = a.status();
      if (o.json) return printJson(s);
      printLine(`device ${s.identity ?? '(not enrolled)'}; ${s.outbox} reports waiting to be sent`);
      for (const c of s.components) {
        printLine(
          `${c.component}: ${c.current ?? '-'} (active ${c.active ?? '-'})${c.hold ? ' HELD' : ''}${c.pin ? ` pinned ${c.pin}` : ''}${c.quarantined.length ? ` quarantined ${c.quarantined.join(',')}` : ''}${c.txn ? ` txn ${c.txn.phase}` : ''}${c.waiting ? `; ${c.waiting}` : ''}`,
        );
      }
    });
  examples(status, [
    'status --config /etc/ringfence/agent.yaml',
    'status --config /etc/ringfence/agent.yaml --json',
  ]);
  const bootGuard = agent
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
  examples(bootGuard, ['boot-guard --config /etc/ringfence/agent.yaml  # from ringfence-boot-guard.service']);
  const local = async (o: { config?: string }): Promise<Agent> => {
    const { pino, Agent, loadAgentConfig } = await runtime();
    return new Agent(loadAgentConfig(configOf(o)), pino({ level: 'silent' }));
  };
  const oneComponent = (a: Agent, component?: string): string => {
    if (component) return component;
    if (a.cfg.components.length === 1) return a.cfg.components[0].name;
    throw new AgentCommandError('several components: name one with --component NAME');
  };
  const rollback = agent
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
  examples(rollback, ['rollback --config /etc/ringfence/agent.yaml --component sensor-content']);
  const pinCmd = agent
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
  examples(pinCmd, ['pin sensor-content@1.4.2 --config /etc/ringfence/agent.yaml']);
  const unpin = agent
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
  examples(unpin, ['unpin --config /etc/ringfence/agent.yaml --component sensor-content']);
  const clearQuarantine = agent
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
  examples(clearQuarantine, [
    'clear-quarantine --config /etc/ringfence/agent.yaml --component sensor-content --release 1.4.2',
  ]);
  const applyBundle = agent
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
  examples(applyBundle, ['apply-bundle /media/usb/fleet.rfb --config /etc/ringfence/agent.yaml']);
  for (const [name, desc] of [
    ['hold', 'hold every component (or --component): nothing new is applied'],
    ['unhold', 'release a local hold'],
  ] as const) {
    const cmd = agent
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
    examples(cmd, [`${name} --config /etc/ringfence/agent.yaml`]);
  }
  initCommand(agent, `${program.name()} ${sub}`.trim(), usage, examples);
}

/**
 * `agent init`: writes a commented configuration from flags (src/agent/config-template.ts), checked by the agent's
 * own loader. It writes /etc/ringfence/agent.yaml by default rather than to stdout: a shell redirect would create
 * the file with the umask's mode (world-readable, with the enrollment token in it) and clobber an existing one,
 * while init writes it atomically, 0600 when it holds a token, and never replaces a file without --force.
 */
function initCommand(
  agent: Command,
  self: string, // how the agent's commands are called: `ringfence agent` or `ringfence-agent`
  usage: (cmd: Command, message: string) => never,
  examples: (cmd: Command, lines: string[]) => Command,
): void {
  const collect = (v: string, prev: string[] = []) => [...prev, v];
  const init = agent
    .command('init')
    .description("write a commented agent configuration from flags, checked by the agent's own schema")
    .option('--server <url>', 'the patch server the agent pulls from, http:// or https:// (required)')
    .addOption(
      new Option(
        '--enroll-token <token>',
        'enrollment token from `ringfence fleet enroll-token` (shell history and `ps` show it: prefer --enroll-token-file)',
      ).conflicts('enrollTokenFile'),
    )
    .option(
      '--enroll-token-file <file>',
      'read the enrollment token from this file (better than --enroll-token)',
    )
    .option('--name <name>', 'device name, unique in the fleet (default: the server names it dev-<id>)')
    .option('--label <key=value>', 'a device label plans select by (repeatable)', collect)
    .option('--state-dir <dir>', "the agent's state folder", DEFAULT_STATE_DIR)
    .option('--poll <duration>', 'check-in interval, e.g. 60s (default: as often as the server says)')
    .requiredOption('--component <name>', 'the component this device updates')
    .addOption(
      new Option('--backend <type>', 'how its releases are applied').choices(BACKENDS).default('dir'),
    )
    .requiredOption(
      '--target <path>',
      'dir: the folder holding releases/ and current; file: the file replaced; exec: where release files are staged',
    )
    .option('--activate <cmd>', 'exec backend: the command that switches to the staged release (required)')
    .option('--rollback <cmd>', 'exec backend: the command that switches back (required)')
    .option('--stage <cmd>', 'exec backend: a command that prepares the staged release')
    .option('--commit <cmd>', 'exec backend: a command run once the release passed its checks')
    .option(
      '--health-check <cmd>',
      'a command run after every switch: exit status 0 is healthy, anything else rolls back',
    )
    .option(
      '--out <file>',
      'where to write ("-": stdout); relative paths in it are taken from its folder',
      DEFAULT_CONFIG_FILE,
    )
    .option('--force', 'replace an existing file')
    .option('--json', 'machine-readable output')
    .action(
      async (
        o: Omit<InitFlags, 'server'> & {
          server?: string;
          enrollTokenFile?: string;
          out: string;
          force?: boolean;
          json?: boolean;
        },
      ) => {
        if (agent.opts<{ config?: string }>().config)
          usage(init, '--config: init writes the file named by --out (default /etc/ringfence/agent.yaml)');
        if (o.json && o.out === '-') usage(init, '--json: not with --out - (both would go to stdout)');
        // Under `ringfence`, the program's own --server (the operator's server) takes the flag wherever it stands.
        let root = agent;
        while (root.parent) root = root.parent;
        const server = o.server ?? root.opts<{ server?: string }>().server;
        if (!server) usage(init, '--server: required (the patch server the agent pulls from)');
        const { readFileSync, lstatSync, mkdirSync } = await import('node:fs');
        const { dirname, resolve } = await import('node:path');
        const t = await import('./config-template.ts');
        const { writeFileAtomicSync, writeFileNewSync } = await import('../files/atomic-file.ts');
        const { VERSION } = await import('../version.ts');
        let enrollToken = o.enrollToken;
        if (o.enrollTokenFile !== undefined) {
          try {
            enrollToken = readFileSync(o.enrollTokenFile, 'utf8').trim();
          } catch (e) {
            usage(init, `--enroll-token-file: cannot read ${o.enrollTokenFile}: ${(e as Error).message}`);
          }
          if (!enrollToken) usage(init, `--enroll-token-file: ${o.enrollTokenFile} is empty`);
        }
        let text: string;
        let opts: ReturnType<typeof t.initOptions>;
        try {
          opts = t.initOptions({ ...o, server, enrollToken });
          text = t.renderAgentConfig(opts, { command: `${self} init`, version: VERSION, at: new Date() });
          await t.checkAgentConfig(text);
        } catch (e) {
          if (e instanceof t.InitFlagError) usage(init, e.message);
          throw e;
        }
        const unchecked = () => {
          if (opts.healthCheck === undefined)
            printErrorLine(
              'note: no --health-check: every release that switches will be committed unchecked',
            );
        };
        if (o.out === '-') {
          unchecked();
          // Only escaped, printable text (yamlString), so it is safe to write raw.
          process.stdout.write(text);
          return;
        }
        const file = resolve(o.out);
        const existing = (() => {
          try {
            return lstatSync(file);
          } catch {
            return null;
          }
        })();
        if (existing?.isDirectory()) usage(init, `--out: ${file} is a folder`);
        if (existing && !o.force) usage(init, `--out: ${file} exists (--force replaces it)`);
        const mode = enrollToken !== undefined ? 0o600 : 0o644;
        try {
          mkdirSync(dirname(file), { recursive: true });
          // Without --force a file that appeared since the check above is still never replaced.
          if (o.force) writeFileAtomicSync(file, text, mode);
          else writeFileNewSync(file, text, mode);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST')
            usage(init, `--out: ${file} exists (--force replaces it)`);
          throw new AgentCommandError(`cannot write ${file}: ${(e as Error).message}`);
        }
        unchecked();
        const summary = {
          file,
          mode: `0${mode.toString(8)}`,
          server: opts.server,
          name: opts.name ?? null,
          labels: Object.fromEntries(opts.labels),
          enroll_token: enrollToken !== undefined,
          state_dir: opts.stateDir,
          component: opts.component,
          backend: opts.backend,
          target: opts.target,
          health_check: opts.healthCheck ?? null,
        };
        if (o.json) return printJson(summary);
        printLine(
          `wrote ${file} (mode ${summary.mode}): ${opts.component} (${opts.backend} ${opts.target}) from ${opts.server}`,
        );
        printLine(
          `check it with \`${self} status --config ${file}\`, then start the agent with it (or its systemd unit)`,
        );
      },
    );
  examples(init, [
    'init --server https://patch.example.internal:8080 --enroll-token-file token --label env=prod --component sensor-content --target /opt/sensor --health-check "systemctl is-active --quiet sensor"',
    'init --server http://10.0.0.5:8080 --component pg-config --backend file --target /etc/postgresql/16/main/conf.d/ringfence.conf --out -  # print it',
    'init --server http://10.0.0.5:8080 --component os --backend exec --target /var/lib/ringfence/os --activate ./activate.sh --rollback ./rollback.sh --out ./agent.yaml --force',
  ]);
}
