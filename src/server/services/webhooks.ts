// Webhooks (issue 14): which events go where, and the outbox rows that announce them. Every event is written to
// the outbox in the transaction of the change it announces (a rollout step, a device report), so a crash
// between the change and its delivery loses nothing; services/webhook-delivery.ts sends the rows. The payload
// schema is documented in docs/webhooks.md and versioned by `schema_version`.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Plan } from '../../engine/plan.ts';
import type { Transition } from '../../engine/rollout.ts';
import { appendAudit } from '../db/audit.ts';
import { type Db, inTransaction, type Store } from '../db/database.ts';
import {
  allWebhooks,
  deleteWebhook,
  findWebhook,
  insertOutbox,
  insertWebhook,
  type OutboxStats,
  outboxStats,
  pendingCount,
  pendingPayloadsLike,
  type WebhookRow,
} from '../db/webhooks.ts';
import { badRequest, notFound } from '../errors.ts';

/** The events a webhook may subscribe to. */
export const WEBHOOK_EVENTS = [
  'rollout.halted',
  'rollout.awaiting-approval',
  'rollout.completed',
  'rollout.rolled-back',
  'device.quarantined',
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
/** Sent only by `webhook test`, to the one webhook tested, whatever it subscribed to. */
export const TEST_EVENT = 'webhook.test';
/** Bumped on any change a receiver could trip over (a field removed or retyped); new fields do not bump it. */
export const SCHEMA_VERSION = 1;
const ROLLOUT_EVENTS: readonly string[] = WEBHOOK_EVENTS.filter((e) => e.startsWith('rollout.'));

/**
 * Undelivered rows per webhook and kind of event; past its cap, a new event of that kind is refused (counted),
 * not queued without bound. Rollout events have their own budget so that device events (a fleet can report
 * quarantines by the thousand while a receiver is down) never crowd out a halt or a rollback; rollout events
 * are few (one per transition). `other` counts device.quarantined and webhook.test.
 */
export interface OutboxCaps {
  rollout: number;
  other: number;
}
export const DEFAULT_OUTBOX_CAPS: OutboxCaps = { rollout: 50_000, other: 10_000 };
// Set from the delivery worker's options (services/webhook-delivery.ts): steps and reports, which enqueue,
// have no options at hand.
let caps: OutboxCaps = DEFAULT_OUTBOX_CAPS;
export function setOutboxCaps(c: OutboxCaps): void {
  caps = { ...c };
}

// Refused events of this process; the delivery worker exposes them as a metric (a step has no metrics at hand).
let refusedCount = 0;
/** Events refused because their webhook's outbox was full, since this process started. */
export function outboxRefused(): number {
  return refusedCount;
}

/** A webhook as the API shows it: never its secret. */
export interface WebhookView {
  id: string;
  url: string;
  events: string[];
  created_at: number;
  created_by: string;
  signed: boolean;
  delivered: number;
  pending: number;
  failed: number;
  last_status: number | null;
  last_error: string | null;
  last_delivered_at: number | null;
}

/** Checks a webhook URL: absolute http(s), no credentials in it (they would show in `webhook list`). */
export function checkUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badRequest(`invalid webhook URL "${url}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw badRequest(`webhook URL must be http:// or https://, not ${u.protocol}`);
  if (u.username || u.password)
    throw badRequest('webhook URL must not carry credentials; the signature authenticates the server');
  return u.toString();
}

/** Checks a list of event names (at least one, each known, no repeats). */
export function checkEvents(events: string[]): WebhookEvent[] {
  if (events.length === 0) throw badRequest('a webhook needs at least one event');
  for (const e of events)
    if (!(WEBHOOK_EVENTS as readonly string[]).includes(e))
      throw badRequest(`unknown event "${e}": one of ${WEBHOOK_EVENTS.join(', ')}`);
  return [...new Set(events)] as WebhookEvent[];
}

const eventsOf = (w: WebhookRow): string[] => JSON.parse(w.events) as string[];

function view(w: WebhookRow, s: OutboxStats): WebhookView {
  return {
    id: w.id,
    url: w.url,
    events: eventsOf(w),
    created_at: Number(w.created_at),
    created_by: w.created_by,
    signed: w.secret !== null,
    delivered: s.delivered,
    pending: s.pending,
    failed: s.failed,
    last_status: s.lastStatus,
    last_error: s.lastError,
    last_delivered_at: s.lastDeliveredAt,
  };
}

/** Adds a webhook, audited. Without a secret one is generated; either way it is returned only here. */
export async function addWebhook(
  store: Store,
  actor: string,
  now: number,
  req: { url: string; events: string[]; secret?: string },
): Promise<{ id: string; url: string; events: string[]; secret: string }> {
  const url = checkUrl(req.url);
  const events = checkEvents(req.events);
  const secret = req.secret ?? `whsec_${randomBytes(24).toString('base64url')}`;
  if (secret.length < 16) throw badRequest('a webhook secret needs at least 16 characters');
  const id = `wh-${randomUUID().slice(0, 8)}`;
  await inTransaction(store, async (tx) => {
    await insertWebhook(tx, {
      id,
      url,
      events: JSON.stringify(events),
      secret,
      created_at: now,
      created_by: actor,
    });
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'webhook.added',
      subject: `webhook/${id}`,
      detail: { url, events },
    });
  });
  return { id, url, events, secret };
}

/** Every webhook with its delivery counts and last outcome. */
export async function listWebhooks(db: Db): Promise<WebhookView[]> {
  const out: WebhookView[] = [];
  for (const w of await allWebhooks(db)) out.push(view(w, await outboxStats(db, w.id)));
  return out;
}

/** Removes a webhook and its undelivered events, audited (404 when there is none). */
export async function removeWebhook(store: Store, actor: string, now: number, id: string): Promise<void> {
  await inTransaction(store, async (tx) => {
    const w = await findWebhook(tx, id);
    if (!w) throw notFound(`no webhook ${id}`);
    await deleteWebhook(tx, id);
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'webhook.removed',
      subject: `webhook/${id}`,
      detail: { url: w.url },
    });
  });
}

/** Queues a `webhook.test` event for one webhook, audited; returns the event id. */
export async function testWebhook(
  store: Store,
  actor: string,
  now: number,
  id: string,
): Promise<{ id: string }> {
  return inTransaction(store, async (tx) => {
    const w = await findWebhook(tx, id);
    if (!w) throw notFound(`no webhook ${id}`);
    const ids = await enqueue(tx, TEST_EVENT, now, { actor }, [w]);
    if (ids.length === 0)
      throw badRequest(`the outbox of webhook ${id} is full (${caps.other} undelivered events)`);
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'webhook.tested',
      subject: `webhook/${id}`,
      detail: { event: ids[0] },
    });
    return { id: ids[0] };
  });
}

/**
 * Writes one outbox row per webhook in `to` (default: every webhook subscribed to `type`), inside `tx`. Each row
 * has its own id, the receiver's de-duplication key, kept across retries. A webhook for which `queued` finds the
 * same news still undelivered gets no second row. Returns the ids queued.
 */
async function enqueue(
  tx: Db,
  type: string,
  at: number,
  body: Record<string, unknown>,
  to?: WebhookRow[],
  queued?: (webhookId: string) => Promise<boolean>,
): Promise<string[]> {
  const targets = to ?? (await allWebhooks(tx)).filter((w) => eventsOf(w).includes(type));
  const rollout = ROLLOUT_EVENTS.includes(type);
  const cap = rollout ? caps.rollout : caps.other;
  const ids: string[] = [];
  for (const w of targets) {
    if (queued && (await queued(w.id))) continue;
    if ((await pendingCount(tx, w.id, ROLLOUT_EVENTS, !rollout)) >= cap) {
      refusedCount++;
      continue;
    }
    const id = `evt_${randomUUID()}`;
    const payload = {
      schema_version: SCHEMA_VERSION,
      id,
      type,
      occurred_at: new Date(at).toISOString(),
      ...body,
    };
    await insertOutbox(tx, {
      id,
      webhook_id: w.id,
      event: type,
      payload: JSON.stringify(payload),
      created_at: at,
      attempts: 0,
      next_attempt_at: at,
      delivered_at: null,
      failed_at: null,
      last_status: null,
      last_error: null,
    });
    ids.push(id);
  }
  return ids;
}

/** What a rollout event says about its rollout. */
export interface RolloutFacts {
  id: number;
  component: string;
  version: string;
  planName: string;
  plan: Plan;
}

/** Queues the events of a step's transitions (those webhooks can subscribe to), in the step's transaction. */
export async function enqueueTransitions(tx: Db, ro: RolloutFacts, transitions: Transition[]): Promise<void> {
  for (const t of transitions) {
    const type = `rollout.${t.to}`;
    if (!(WEBHOOK_EVENTS as readonly string[]).includes(type)) continue;
    await enqueue(tx, type, t.at, {
      rollout: {
        id: ro.id,
        component: ro.component,
        version: ro.version,
        plan: ro.planName,
        status: t.to,
        previous_status: t.from,
        wave: t.wave,
        wave_name: ro.plan.waves[t.wave]?.name ?? null,
        reason: t.why || null,
      },
    });
  }
}

/**
 * Queues `device.quarantined`: the device rolled a release back and will not apply it again by itself. Once per
 * webhook, device and release while undelivered: a device repeating its report (or a receiver that is down)
 * does not fill the outbox with copies of the same news.
 */
export async function enqueueQuarantined(
  tx: Db,
  deviceId: string,
  r: { component: string; version: string; reason: string | null; class: string | null },
  at: number,
): Promise<void> {
  const device = { id: deviceId, component: r.component, version: r.version };
  // The payload holds `"device":{"id":…,"component":…,"version":…,` as JSON.stringify writes it below.
  const fragment = JSON.stringify(device).slice(1, -1);
  const same = (payload: string) => {
    const d = (JSON.parse(payload) as { device?: typeof device }).device;
    return d?.id === device.id && d.component === device.component && d.version === device.version;
  };
  await enqueue(
    tx,
    'device.quarantined',
    at,
    { device: { ...device, class: r.class, reason: r.reason } },
    undefined,
    async (webhookId) =>
      (await pendingPayloadsLike(tx, webhookId, 'device.quarantined', fragment)).some(same),
  );
}
