// Runs one command line and turns every failure into the contract's exit code and a one-line message (and, with
// --json, one JSON object `{"error": "<code>", "message": "…"}` on stdout for scripts).
import { CommanderError } from 'commander';
import { CliError } from './client.ts';
import { printErrorLine, printJsonLine } from './output.ts';
import { buildProgram } from './program.ts';

/** Parses and runs `argv` (process.argv shape); sets process.exitCode, never throws. */
export async function runCli(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has already printed its message (or the help). Asked-for help exits 0; anything else (an
      // unknown command or flag, a missing argument, no command at all) is a usage error.
      if (e.exitCode === 0) {
        process.exitCode = 0;
        return;
      }
      if (json) printJsonLine({ error: 'usage', message: e.message.replace(/^error: /, '') });
      process.exitCode = 2;
      return;
    }
    const known = e instanceof CliError;
    const msg = (e as Error).message ?? String(e);
    if (json) printJsonLine({ error: known ? e.code : 'failed', message: msg });
    printErrorLine(`ringfence: ${msg}`);
    // An unexpected error is a bug: its stack helps the report, on request only.
    if (!known && process.env.RINGFENCE_DEBUG) printErrorLine(String((e as Error).stack));
    process.exitCode = known ? e.exitCode : 1;
  }
}
