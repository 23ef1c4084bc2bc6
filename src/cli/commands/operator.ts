// `ringfence operator …` and `ringfence whoami`: named operators with roles, their API tokens, and who am I.
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn, usageError as usage } from '../client.ts';
import { printJson, printLine, printTable } from '../output.ts';

const ROLES = ['viewer', 'operator', 'approver', 'admin'] as const;
// The server checks these too; checking here turns a typo into a usage error before any request.
const NAME = /^[a-z][a-z0-9._-]{0,63}$/;

interface TokenInfo {
  name: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

interface OperatorInfo {
  name: string;
  role: string;
  created_at: number;
  created_by: string | null;
  revoked_at: number | null;
  tokens: TokenInfo[];
}

function checkName(what: string, name: string): string {
  if (!NAME.test(name))
    throw usage(
      `invalid ${what} "${name}": lower-case letters, digits, ".", "_" or "-", starting with a letter (at most 64)`,
    );
  return name;
}

function checkRole(role: string): string {
  if (!(ROLES as readonly string[]).includes(role))
    throw usage(`invalid role "${role}": one of ${ROLES.join(', ')}`);
  return role;
}

const op = (name: string) => `/v1/admin/operators/${encodeURIComponent(checkName('operator name', name))}`;
const iso = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString() : null);

/** One token for a table cell: its name and, when it matters, why it no longer works or when it will stop. */
function tokenLabel(t: TokenInfo, now: number): string {
  if (t.revoked_at) return `${t.name}(revoked)`;
  if (t.expires_at && t.expires_at <= now) return `${t.name}(expired)`;
  if (t.expires_at) return `${t.name}(until ${new Date(t.expires_at).toISOString().slice(0, 10)})`;
  return t.name;
}

/** Only the fields the API documents, so no token or hash can reach the output even if a server sent one. */
function publicOperator(o: OperatorInfo): OperatorInfo {
  return {
    name: o.name,
    role: o.role,
    created_at: o.created_at,
    created_by: o.created_by,
    revoked_at: o.revoked_at,
    tokens: (o.tokens ?? []).map((t) => ({
      name: t.name,
      created_at: t.created_at,
      expires_at: t.expires_at,
      revoked_at: t.revoked_at,
      last_used_at: t.last_used_at,
    })),
  };
}

/** Prints a token shown once: alone on stdout (easy to pipe into a secrets store), the advice on stderr. */
function printSecret(token: string, advice: string): void {
  printLine(token);
  process.stderr.write(`${advice}\n`);
}

/** Registers `ringfence operator …` and `ringfence whoami`. */
export function operatorCommands(program: Command, conn: () => Conn): void {
  const whoami = program
    .command('whoami')
    .description('the operator, role and token this CLI is using, and what it may do')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{
        name: string;
        role: string;
        token: string;
        actor: string;
        permissions: string[];
      }>(conn(), 'GET', '/v1/admin/whoami');
      if (o.json) return printJson(r);
      printLine(
        `${r.name} (role ${r.role}) with token ${r.token}; audit actor ${r.actor}; may: ${r.permissions.join(', ')}`,
      );
    });
  withExamples(whoami, ['whoami', 'whoami --json']);

  const operator = program
    .command('operator')
    .description('operators (people and CI jobs), their roles and API tokens (needs role admin)');
  withExamples(operator, [
    'operator add alice --role operator   # prints her token once',
    'operator list',
    'operator revoke alice',
  ]);
  const add = operator
    .command('add')
    .description('create an operator; its token is printed once')
    .argument('<name>', 'operator name (e.g. alice, ci.deploy)')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--json', 'machine-readable output: {"name","role","token"}')
    .action(async (name: string, o: { role: string; json?: boolean }) => {
      const r = await api<{ name: string; role: string; token: string }>(
        conn(),
        'POST',
        '/v1/admin/operators',
        { name: checkName('operator name', name), role: checkRole(o.role) },
      );
      if (o.json) return printJson({ name: r.name, role: r.role, token: r.token });
      printSecret(
        r.token,
        `operator ${r.name} added with role ${r.role}; this token is shown once: hand it over safely (RINGFENCE_TOKEN)`,
      );
    });
  withExamples(add, [
    'operator add alice --role operator   # prints her token once',
    'operator add bob --role approver --json',
    'operator add ci.deploy --role operator',
  ]);
  const list = operator
    .command('list')
    .description('operators, roles and token names (never the tokens themselves)')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ operators: OperatorInfo[] }>(conn(), 'GET', '/v1/admin/operators');
      const ops = r.operators.map(publicOperator);
      if (o.json) return printJson({ operators: ops });
      const now = Date.now();
      printTable(
        ops.map((x) => ({
          name: x.name,
          role: x.role,
          created: iso(x.created_at),
          'created by': x.created_by,
          revoked: iso(x.revoked_at),
          tokens: x.tokens.map((t) => tokenLabel(t, now)).join(' '),
        })),
        ['name', 'role', 'created', 'created by', 'revoked', 'tokens'],
      );
    });
  withExamples(list, ['operator list', 'operator list --json']);
  const revoke = operator
    .command('revoke')
    .description('revoke an operator: every one of its tokens is refused from the next request')
    .argument('<name>', 'operator name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api<{ name: string; revoked_at: number }>(conn(), 'POST', `${op(name)}/revoke`, {});
      if (o.json) return printJson(r);
      printLine(`operator ${r.name} revoked: its tokens are refused from now on`);
    });
  withExamples(revoke, ['operator revoke alice']);
  const rotate = operator
    .command('rotate')
    .description("replace an operator's default token: the new one is printed once, the old one is refused")
    .argument('<name>', 'operator name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api<{ name: string; token: string }>(conn(), 'POST', `${op(name)}/rotate`, {});
      if (o.json) return printJson(r);
      printSecret(r.token, `new token of ${r.name}, shown once; the old one is refused from now on`);
    });
  withExamples(rotate, ['operator rotate alice', 'operator rotate alice --json']);
  const setRole = operator
    .command('set-role')
    .description("change an operator's role (takes effect on its next request)")
    .argument('<name>', 'operator name')
    .argument('<role>', ROLES.join(' | '))
    .option('--json', 'machine-readable output')
    .action(async (name: string, role: string, o: { json?: boolean }) => {
      const r = await api<{ name: string; role: string }>(conn(), 'POST', `${op(name)}/role`, {
        role: checkRole(role),
      });
      if (o.json) return printJson(r);
      printLine(`operator ${r.name} now has role ${r.role}`);
    });
  withExamples(setRole, ['operator set-role alice viewer', 'operator set-role bob approver']);

  const token = operator
    .command('token')
    .description("an operator's named API tokens (for CI jobs; admin, or the operator itself)");
  withExamples(token, [
    'operator token add alice --token-name ci --expires 30d',
    'operator token revoke alice ci',
  ]);
  const tokenAdd = token
    .command('add')
    .description('create a named token for NAME, optionally expiring; printed once')
    .argument('<name>', 'operator name')
    .requiredOption('--token-name <token>', 'token name, e.g. ci (the audit log says NAME/TOKEN)')
    .option('--expires <duration>', 'lifetime, e.g. 12h, 30d, 1w (default: until revoked)')
    .option('--json', 'machine-readable output: {"operator","name","token","expires_at"}')
    .action(async (name: string, o: { tokenName: string; expires?: string; json?: boolean }) => {
      let expiresInS: number | undefined;
      if (o.expires !== undefined) {
        let ms: number;
        try {
          ms = parseDuration(o.expires);
        } catch (e) {
          throw usage(`--expires: ${(e as Error).message}`);
        }
        if (ms < 1000) throw usage('--expires must be at least 1s');
        expiresInS = Math.round(ms / 1000);
      }
      const r = await api<{ operator: string; name: string; token: string; expires_at: number | null }>(
        conn(),
        'POST',
        `${op(name)}/tokens`,
        {
          name: checkName('token name', o.tokenName),
          ...(expiresInS !== undefined ? { expires_in_s: expiresInS } : {}),
        },
      );
      if (o.json) return printJson(r);
      printSecret(
        r.token,
        `token ${r.name} of ${r.operator}${r.expires_at ? `, valid until ${iso(r.expires_at)}` : ', valid until revoked'}; shown once (audit actor ${r.operator}/${r.name})`,
      );
    });
  withExamples(tokenAdd, [
    'operator token add alice --token-name ci --expires 30d   # printed once; 12h, 30d, 1w …',
    'operator token add ci.deploy --token-name nightly --json',
  ]);
  const tokenRevoke = token
    .command('revoke')
    .description('revoke one named token of NAME; its other tokens keep working')
    .argument('<name>', 'operator name')
    .argument('<token>', 'token name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, tok: string, o: { json?: boolean }) => {
      const r = await api<{ operator: string; name: string; revoked_at: number }>(
        conn(),
        'POST',
        `${op(name)}/tokens/${encodeURIComponent(checkName('token name', tok))}/revoke`,
        {},
      );
      if (o.json) return printJson(r);
      printLine(`token ${r.name} of ${r.operator} revoked`);
    });
  withExamples(tokenRevoke, [
    "operator token revoke alice ci   # only that token; alice's others keep working",
  ]);
}
