// Examples in `--help`: every command shows at least one (test/cli-help.test.ts). Shared by the CLI and the device
// agent's commands, which never load the CLI.
import type { Command } from 'commander';

/**
 * Adds an "Examples:" section after a command's help. Each entry is a command line without the program name
 * (`fleet list --json`), optionally followed by `  # what it does`.
 */
export function withExamples(cmd: Command, examples: string[]): Command {
  const root = rootName(cmd);
  const lines = examples.map((e) => `  $ ${root} ${e}`);
  return cmd.addHelpText('after', `\nExamples:\n${lines.join('\n')}\n`);
}

/** The name the command line starts with: `ringfence`, or `ringfence-agent` for the device build. */
function rootName(cmd: Command): string {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c.name();
}
