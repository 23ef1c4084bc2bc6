// `ringfence admin …`: the admin token itself.
import type { Command } from 'commander';
import { api, type Conn } from '../client.ts';
import { printJson, printLine } from '../output.ts';

export function adminCommands(program: Command, conn: () => Conn): void {
  const admin = program.command('admin').description('the admin token');
  admin
    .command('rotate-token')
    .description('replace the admin token: the new one is printed once and the old one stops working')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ token: string }>(conn(), 'POST', '/v1/admin/token/rotate', {});
      if (o.json) return printJson(r);
      printLine(r.token);
      process.stderr.write(
        'the old admin token is refused from now on; store this one safely and update RINGFENCE_TOKEN\n',
      );
    });
}
