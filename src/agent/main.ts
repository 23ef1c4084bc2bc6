// Entry point of the device build (dist/ringfence-agent.mjs, `npm run build:agent`): the agent's commands
// (commands.ts), the very ones the CLI mounts as `ringfence agent …`, so the daemon and the local controls cannot
// drift apart. Nothing of the CLI or the server is loaded. `ringfence-agent --config F` runs the daemon;
// `ringfence-agent status --config F` and the other subcommands control it, with no server.
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.ts';
import { agentCommand } from './commands.ts';

const program = new Command('ringfence-agent')
  .version(VERSION, '-V, --version', 'print the Ringfence version')
  .description('Ringfence device agent')
  .exitOverride();
agentCommand(program);

try {
  // The program's only command is `agent`: every argument is handed to it.
  await program.parseAsync(['agent', ...process.argv.slice(2)], { from: 'user' });
} catch (e) {
  if (e instanceof CommanderError) {
    // Asked-for help or version exits 0; a bad command line is a usage error (2), as in the CLI (docs/cli.md).
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`ringfence-agent: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}
