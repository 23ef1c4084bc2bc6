// The `ringfence` command tree: every command, its flags and help. Actions load their work on demand
// (`await import`), so building the tree, `--help` and shell completion stay light (test/cli-startup.test.ts).
import { Argument, Command, Help, Option } from 'commander';
import { agentCommand } from '../agent/commands.ts';
import { withExamples } from '../terminal/help.ts';
import { adminCommands } from './commands/admin.ts';
import { bundleCommands } from './commands/bundle.ts';
import { configCommands } from './commands/config.ts';
import { fleetCommands } from './commands/fleet.ts';
import { historyCommands } from './commands/history.ts';
import { keysCommands } from './commands/keys.ts';
import { lockCommands } from './commands/lock.ts';
import { loginCommand } from './commands/login.ts';
import { operatorCommands } from './commands/operator.ts';
import { rehearseCommand } from './commands/rehearse.ts';
import { releaseCommands } from './commands/release.ts';
import { repoCommands } from './commands/repo.ts';
import { planCommands, rolloutCommands } from './commands/rollout.ts';
import { serverCommand } from './commands/server.ts';
import { watchCommand } from './commands/watch.ts';
import { webhookCommands } from './commands/webhook.ts';
import { connection, prepareContexts } from './contexts.ts';
import { printLine } from './output.ts';

// Shown in the root help only: main.ts answers --version before the tree is built (see there for why).
const VERSION_FLAG = new Option('-V, --version', 'print the Ringfence version (with --json: {"version": …})');

/** Builds the whole command tree (no command runs). */
export function buildProgram(): Command {
  const program = new Command('ringfence')
    .description('Ringfence: staged, verified, transactional updates for fleets you own')
    .option('--server <url>', 'server address (or RINGFENCE_SERVER, or a context)')
    .option('--token <token>', "operator token (or RINGFENCE_TOKEN, or a context's token file)")
    .option(
      '--context <name>',
      'a context of the CLI configuration file (or RINGFENCE_CONTEXT; see `config`)',
    )
    .showHelpAfterError()
    .configureHelp({
      visibleOptions(cmd) {
        const shown = Help.prototype.visibleOptions.call(this, cmd);
        return cmd.parent ? shown : [VERSION_FLAG, ...shown];
      },
    })
    .exitOverride()
    // Before any action: conn() reads the contexts synchronously, with a parser loaded here on demand.
    .hook('preAction', prepareContexts);

  const conn = () => connection(program.opts());

  serverCommand(program);
  agentCommand(program); // the device agent's own commands, mounted as `ringfence agent …`
  releaseCommands(program, conn);
  planCommands(program, conn);
  rolloutCommands(program, conn);
  fleetCommands(program, conn);
  adminCommands(program, conn);
  operatorCommands(program, conn);
  webhookCommands(program, conn);
  lockCommands(program, conn);
  loginCommand(program);
  historyCommands(program, conn);
  rehearseCommand(program, conn);
  watchCommand(program, conn);
  keysCommands(program);
  repoCommands(program);
  bundleCommands(program);
  configCommands(program);
  withExamples(program, [
    'fleet list --json',
    'config set-context lab --server https://patch.lab:8080 --token-file ~/.ringfence/lab.token  # once',
    '--context lab rollout list  # then, with no token in the shell',
    'completion bash  # shell completion (see `ringfence completion --help`)',
  ]);

  withExamples(
    program
      .command('completion')
      .description('print the shell completion script for bash, zsh or fish')
      .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish'])),
    [
      'completion bash > ~/.local/share/bash-completion/completions/ringfence  # or in ~/.bashrc: source <(ringfence completion bash)',
      'completion zsh > ~/.zfunc/_ringfence  # with fpath+=(~/.zfunc) before compinit in ~/.zshrc',
      'completion fish > ~/.config/fish/completions/ringfence.fish',
    ],
  ).action(async (shell: 'bash' | 'zsh' | 'fish') => {
    const { completionScript } = await import('./completion.ts');
    process.stdout.write(completionScript(program, shell));
  });

  withExamples(
    program
      .command('demo')
      .description('live demonstration: a server and ~30 real agents, a good and a bad release')
      .option('--devices <n>', 'fleet size', '30')
      .option('--keep', 'keep the temporary folder')
      .option('--json', 'print the summary as one JSON object on the last line'),
    ['demo', 'demo --devices 100 --keep  # a bigger fleet; the folder stays for a look afterwards'],
  ).action(async (o: { devices: string; keep?: boolean; json?: boolean }) => {
    const { runDemo } = await import('../demo/demo.ts');
    const r = await runDemo({ devices: Number(o.devices), keep: o.keep, say: (l) => printLine(l) });
    printLine('');
    printLine(
      `summary: fleet ${r.fleet}; good release exposed ${r.good.exposed}, succeeded ${r.good.succeeded}`,
    );
    printLine(
      `         bad release exposed ${r.bad.exposed} (${((r.bad.exposed * 100) / r.fleet).toFixed(0)}% of the fleet), rolled back ${r.bad.rolled_back}, halted after "${r.bad.halted_after_wave}"`,
    );
    printLine(
      `         ${r.story_held ? 'the story held' : `the story did NOT hold: ${r.problems.join('; ')}`} (${r.seconds}s)`,
    );
    if (o.json) {
      const { fleet, good, bad } = r;
      printLine(
        JSON.stringify({
          fleet,
          good: { exposed: good.exposed, succeeded: good.succeeded },
          bad: {
            exposed: bad.exposed,
            rolled_back: bad.rolled_back,
            halted: bad.halted,
            halted_after_wave: bad.halted_after_wave,
          },
        }),
      );
    }
    if (!r.story_held) process.exitCode = 1;
  });
  return program;
}
