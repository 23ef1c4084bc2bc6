// `ringfence config …`: the CLI's named contexts (server + token file), like kubectl's (docs/configuration.md).
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { withExamples } from '../../terminal/help.ts';
import { CliError, usageError } from '../client.ts';
import {
  type CliConfig,
  CONTEXT_NAME,
  editCliConfig,
  readCliConfig,
  storedTokenPath,
  tokenPath,
} from '../contexts.ts';
import { printJson, printLine, printTable } from '../output.ts';

function checkName(name: string): void {
  if (!CONTEXT_NAME.test(name))
    throw usageError(`bad context name "${name}": letters, digits, ".", "_" or "-", at most 63`);
}

function known(config: CliConfig, name: string, file: string): void {
  if (!Object.hasOwn(config.contexts, name)) throw usageError(`unknown context "${name}" in ${file}`);
}

/** A token file named on the command line must exist and be private now, not at the first command that needs it. */
function checkTokenFile(path: string): void {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch (e) {
    throw usageError(`cannot use the token file ${path}: ${(e as Error).message}`);
  }
  if (mode & 0o077)
    throw usageError(
      `token file ${path} is readable by other users (mode 0${mode.toString(8)}); run: chmod 600 ${path}`,
    );
}

/** Sets (creates or updates) a context and, when asked or when there is none yet, makes it the current one. */
export async function setContext(
  name: string,
  fields: { server?: string; tokenFile?: string },
  makeCurrent = false,
): Promise<{ file: string; current: boolean; created: boolean }> {
  checkName(name);
  if (
    fields.server !== undefined &&
    !(URL.canParse(fields.server) && /^https?:$/.test(new URL(fields.server).protocol))
  )
    throw usageError(`--server must be an http:// or https:// URL, not "${fields.server}"`);
  const { file, result } = await editCliConfig(({ file, config, doc }) => {
    const created = !Object.hasOwn(config.contexts, name);
    if (created && !fields.server) throw usageError(`a new context needs --server URL`);
    if (fields.server) doc.setIn(['contexts', name, 'server'], fields.server);
    if (fields.tokenFile)
      doc.setIn(['contexts', name, 'token-file'], storedTokenPath(file, fields.tokenFile));
    const current = makeCurrent || !config['current-context'];
    if (current) doc.set('current-context', name);
    return { current: current || config['current-context'] === name, created };
  });
  return { file, ...result };
}

export function configCommands(program: Command): void {
  const config = withExamples(
    program
      .command('config')
      .description('named contexts (server + token file) in the CLI configuration file, like kubectl'),
    [
      'config set-context lab --server https://patch.lab:8080 --token-file ~/.ringfence/lab.token',
      'config get-contexts',
    ],
  );

  withExamples(
    config
      .command('set-context')
      .description('create or change a context (the first one becomes the current context)')
      .argument('<name>', 'context name')
      .option('--server <url>', 'the server address (needed for a new context)')
      .option('--token-file <file>', 'a file holding the operator token, readable by you only (chmod 600)')
      .option('--use', 'make it the current context')
      .option('--json', 'machine-readable output'),
    [
      'config set-context lab --server https://patch.lab:8080 --token-file ~/.ringfence/lab.token',
      'config set-context prod --server https://patch.prod:8080 --use  # token from RINGFENCE_TOKEN or --token',
    ],
  ).action(
    async (name: string, o: { server?: string; tokenFile?: string; use?: boolean; json?: boolean }) => {
      const tokenFile = o.tokenFile ? resolve(o.tokenFile) : undefined;
      if (tokenFile) checkTokenFile(tokenFile);
      // The program's own --server takes the flag wherever it stands (commander reads program options everywhere).
      const server = o.server ?? program.opts<{ server?: string }>().server;
      const r = await setContext(name, { server, tokenFile }, o.use);
      if (o.json) return printJson({ context: name, file: r.file, created: r.created, current: r.current });
      printLine(
        `context ${name} ${r.created ? 'created' : 'changed'} in ${r.file}${r.current ? ' (current context)' : ''}`,
      );
    },
  );

  withExamples(
    config
      .command('use-context')
      .description(
        'make a context the current one (used when neither --context nor RINGFENCE_CONTEXT is given)',
      )
      .argument('<name>', 'context name'),
    ['config use-context prod'],
  ).action(async (name: string) => {
    const { file } = await editCliConfig(({ file, config, doc }) => {
      known(config, name, file);
      doc.set('current-context', name);
    });
    printLine(`current context: ${name} (${file})`);
  });

  withExamples(
    config
      .command('get-contexts')
      .description('list the contexts (the current one is marked with *)')
      .option('--names', 'only the names, one a line (for scripts and shell completion)')
      .option('--json', 'machine-readable output'),
    ['config get-contexts', 'config get-contexts --names'],
  ).action((o: { names?: boolean; json?: boolean }) => {
    const { file, config } = readCliConfig();
    const current = config['current-context'];
    const rows = Object.entries(config.contexts).map(([name, c]) => ({
      name,
      server: c.server,
      token_file: c['token-file'] ? tokenPath(file, c['token-file']) : null,
      current: name === current,
    }));
    if (o.names) {
      for (const r of rows) printLine(r.name);
      return;
    }
    if (o.json) return printJson(rows);
    printTable(
      rows.map((r) => ({ ...r, current: r.current ? '*' : '' })),
      ['current', 'name', 'server', 'token_file'],
    );
  });

  withExamples(
    config
      .command('current-context')
      .description('print the current context')
      .option('--json', 'machine-readable output: {"current_context": NAME or null, "file": PATH}'),
    ['config current-context'],
  ).action((o: { json?: boolean }) => {
    const { file, config } = readCliConfig();
    const current = config['current-context'] ?? null;
    if (o.json) return printJson({ current_context: current, file });
    if (!current) throw new CliError(`no current context in ${file}`, 'no_context');
    printLine(current);
  });

  withExamples(
    config
      .command('delete-context')
      .description('remove a context (its token file is left in place)')
      .argument('<name>', 'context name'),
    ['config delete-context old-lab'],
  ).action(async (name: string) => {
    const { file, result } = await editCliConfig(({ file, config, doc }) => {
      known(config, name, file);
      doc.deleteIn(['contexts', name]);
      const wasCurrent = config['current-context'] === name;
      if (wasCurrent) doc.delete('current-context');
      const tf = config.contexts[name]['token-file'];
      return { wasCurrent, tokenFile: tf ? tokenPath(file, tf) : null };
    });
    printLine(
      `context ${name} deleted from ${file}${result.wasCurrent ? '; there is no current context now' : ''}`,
    );
    if (result.tokenFile)
      process.stderr.write(
        `its token file ${result.tokenFile} is still there: delete it if no longer needed\n`,
      );
  });
}
