// `ringfence admin …`: the caller's own token.
import type { Command } from 'commander';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn } from '../client.ts';
import { printJson, printLine } from '../output.ts';

/** Registers `ringfence admin rotate-token`. */
export function adminCommands(program: Command, conn: () => Conn): void {
  const admin = program.command('admin').description('your own token');
  withExamples(admin, ['admin rotate-token']);
  const rotate = admin
    .command('rotate-token')
    .description(
      'replace the token this CLI is using (any role): the new one is printed once and the old one stops working',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ token: string }>(conn(), 'POST', '/v1/admin/token/rotate', {});
      if (o.json) return printJson(r);
      printLine(r.token);
      process.stderr.write(
        'the token you used is refused from now on; store this one safely and update RINGFENCE_TOKEN' +
          " (to replace another operator's token: ringfence operator rotate NAME)\n",
      );
    });
  withExamples(rotate, [
    'admin rotate-token   # prints the new token once; update RINGFENCE_TOKEN',
    'admin rotate-token --json',
  ]);
}
