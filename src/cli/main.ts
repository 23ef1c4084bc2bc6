// The `ringfence` command line: every operation, scriptable, with --json, one-line errors and documented exit
// codes (docs/cli.md): 0 success, 1 refused or failed, 2 usage error, 3 server unreachable or token rejected.
import { VERSION } from '../version.ts';

const args = process.argv.slice(2);

// A reader that goes away (`ringfence audit list | head`) ends the command quietly, as SIGPIPE ends other Unix
// tools: no stack trace, and exit status 141 (128 + SIGPIPE), so `set -o pipefail` still sees that the command
// did not run to its end (an import cut short must not look like success).
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(141);
    throw e;
  });

// `ringfence --version` is answered before anything else loads: scripts call it often. It is not a commander
// option: `release import --version V` is part of the command-line contract, and a program-wide --version would
// take it (commander reads program options after subcommands too).
if (args[0] === '--version' || args[0] === '-V') {
  process.stdout.write(
    args.includes('--json') ? `${JSON.stringify({ version: VERSION })}\n` : `${VERSION}\n`,
  );
} else {
  const { runCli } = await import('./run.ts');
  await runCli(process.argv);
}
