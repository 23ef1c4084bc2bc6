// `ringfence webhook …`: where the server sends rollout and device events (signed JSON POSTs), and how their
// delivery goes. The payloads and how a receiver verifies them: docs/webhooks.md.
import type { Command } from 'commander';
import type { WebhookView } from '../../server/services/webhooks.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn, usageError as usage } from '../client.ts';
import { printJson, printLine, printTable, terminalSafe } from '../output.ts';

// The server's list (services/webhooks.ts WEBHOOK_EVENTS; a test keeps both equal): the CLI stays light, and a
// typo is a usage error before any request.
export const EVENTS = [
  'rollout.halted',
  'rollout.awaiting-approval',
  'rollout.completed',
  'rollout.rolled-back',
  'device.quarantined',
] as const;

const ID = /^wh-[a-z0-9-]{1,40}$/;

function checkId(id: string): string {
  if (!ID.test(id)) throw usage(`invalid webhook id "${id}" (like wh-1a2b3c4d; see webhook list)`);
  return id;
}

function checkEvents(list: string): string[] {
  const events = list
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (events.length === 0) throw usage(`--events needs at least one of ${EVENTS.join(', ')}`);
  for (const e of events)
    if (!(EVENTS as readonly string[]).includes(e))
      throw usage(`unknown event "${e}": one of ${EVENTS.join(', ')}`);
  return events;
}

function checkUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw usage(`invalid URL "${url}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw usage(`the webhook URL must be http:// or https://, not ${u.protocol}`);
  return url;
}

/** The secret from --secret or --secret-file (a file keeps it out of the shell history and `ps`). */
async function secretOf(o: { secret?: string; secretFile?: string }): Promise<string | undefined> {
  if (o.secret !== undefined && o.secretFile !== undefined)
    throw usage('give --secret or --secret-file, not both');
  let s = o.secret;
  if (o.secretFile !== undefined) {
    const { readFileSync } = await import('node:fs');
    try {
      s = readFileSync(o.secretFile, 'utf8').trim();
    } catch (e) {
      throw usage(`cannot read --secret-file ${o.secretFile}: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
  }
  if (s !== undefined && s.length < 16) throw usage('a webhook secret needs at least 16 characters');
  return s;
}

const iso = (ms: number | null) => (ms ? new Date(ms).toISOString() : null);

/** Only the documented fields, so nothing else a server sent reaches the output. */
function publicWebhook(w: WebhookView): WebhookView {
  return {
    id: w.id,
    url: w.url,
    events: w.events ?? [],
    created_at: w.created_at,
    created_by: w.created_by,
    signed: w.signed,
    delivered: w.delivered,
    pending: w.pending,
    failed: w.failed,
    last_status: w.last_status,
    last_error: w.last_error,
    last_delivered_at: w.last_delivered_at,
  };
}

/** Registers `ringfence webhook …`. */
export function webhookCommands(program: Command, conn: () => Conn): void {
  const webhook = program
    .command('webhook')
    .description('send rollout and device events to other systems as signed HTTP POSTs');
  withExamples(webhook, [
    'webhook add https://chat.example/hook --events rollout.halted,rollout.awaiting-approval --secret-file ./hook.key',
    'webhook list',
    'webhook test wh-1a2b3c4d',
  ]);

  const add = webhook
    .command('add')
    .description(
      'add a webhook (role admin); prints its id, and the signing secret once if the server made it',
    )
    .argument('<url>', 'where to POST (http:// or https://); the server connects wherever this points')
    .requiredOption('--events <list>', `comma-separated: ${EVENTS.join(', ')}`)
    .option('--secret <s>', 'HMAC-SHA256 signing secret, at least 16 characters (default: generated)')
    .option('--secret-file <file>', 'read the secret from a file (better: not in shell history or ps)')
    .option('--json', 'machine-readable output: {"id","url","events","secret"}')
    .action(
      async (url: string, o: { events: string; secret?: string; secretFile?: string; json?: boolean }) => {
        const body: Record<string, unknown> = { url: checkUrl(url), events: checkEvents(o.events) };
        const secret = await secretOf(o);
        if (secret !== undefined) body.secret = secret;
        const r = await api<{ id: string; url: string; events: string[]; secret: string }>(
          conn(),
          'POST',
          '/v1/admin/webhooks',
          body,
        );
        if (o.json) return printJson({ id: r.id, url: r.url, events: r.events, secret: r.secret });
        printLine(
          `added webhook ${terminalSafe(r.id)} → ${terminalSafe(r.url)} (${terminalSafe(r.events.join(', '))})`,
        );
        if (secret === undefined) {
          printLine(`signing secret (shown once): ${terminalSafe(r.secret)}`);
          process.stderr.write(
            'Give it to the receiver; it verifies x-ringfence-signature with it (docs/webhooks.md).\n',
          );
        }
      },
    );
  withExamples(add, [
    'webhook add https://ops.example/ringfence --events rollout.halted,rollout.rolled-back,device.quarantined',
    'webhook add http://127.0.0.1:9000/hook --events rollout.completed --secret-file /etc/ringfence/hook.key',
  ]);

  const list = webhook
    .command('list')
    .description('every webhook with its delivery status: delivered, pending, failed, last answer')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api<{ webhooks: WebhookView[] }>(conn(), 'GET', '/v1/admin/webhooks');
      const hooks = (r.webhooks ?? []).map(publicWebhook);
      if (o.json) return printJson(hooks);
      if (hooks.length === 0)
        return printLine('no webhooks (add one with `ringfence webhook add URL --events …`)');
      printTable(
        hooks.map((w) => ({
          id: w.id,
          url: w.url,
          events: w.events.join(','),
          delivered: w.delivered,
          pending: w.pending,
          failed: w.failed,
          last: w.last_error ?? (w.last_status === null ? null : `HTTP ${w.last_status}`),
          last_delivered: iso(w.last_delivered_at),
        })),
        ['id', 'url', 'events', 'delivered', 'pending', 'failed', 'last', 'last_delivered'],
      );
    });
  withExamples(list, ['webhook list', 'webhook list --json']);

  const remove = webhook
    .command('remove')
    .description('remove a webhook (role admin); its undelivered events are dropped')
    .argument('<id>', 'webhook id (see webhook list)')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { json?: boolean }) => {
      await api(conn(), 'DELETE', `/v1/admin/webhooks/${checkId(id)}`);
      if (o.json) return printJson({ removed: id });
      printLine(`removed webhook ${id}`);
    });
  withExamples(remove, ['webhook remove wh-1a2b3c4d']);

  const test = webhook
    .command('test')
    .description(
      'queue a webhook.test event for one webhook (role operator); see webhook list for the outcome',
    )
    .argument('<id>', 'webhook id (see webhook list)')
    .option('--json', 'machine-readable output: {"id"} (the event id)')
    .action(async (id: string, o: { json?: boolean }) => {
      const r = await api<{ id: string }>(conn(), 'POST', `/v1/admin/webhooks/${checkId(id)}/test`, {});
      if (o.json) return printJson({ id: r.id });
      printLine(`queued test event ${terminalSafe(r.id)} for webhook ${id}`);
    });
  withExamples(test, ['webhook test wh-1a2b3c4d']);
}
