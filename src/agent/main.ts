// Entry point of the device build (dist/ringfence-agent.mjs, `npm run build:agent`): only the `agent`
// commands of the CLI, wired exactly as `ringfence agent …`, so the daemon and the local controls cannot drift
// apart. `ringfence-agent --config F` runs the daemon; `ringfence-agent status --config F` and the other
// subcommands control it, with no server.
import { Command, CommanderError } from 'commander';
import { CliError } from '../cli/client.ts';
import { agentCommand } from '../cli/commands/daemons.ts';
import { VERSION } from '../version.ts';

const program = new Command('ringfence-agent')
  .version(VERSION, '-V, --cli-version', 'print the Ringfence version')
  .description('Ringfence device agent')
  .exitOverride();
agentCommand(program);

try {
  // The program's only command is `agent`: every argument is handed to it.
  await program.parseAsync(['agent', ...process.argv.slice(2)], { from: 'user' });
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode;
  } else {
    const msg = e instanceof CliError ? e.message : (e as Error).message;
    process.stderr.write(`ringfence-agent: ${msg}\n`);
    process.exitCode = 1;
  }
}
