// Tables `webhooks` and `webhook_outbox` (issue 14): where events are sent, and every event waiting for (or done
// with) delivery. Outbox rows are written in the same transaction as the change they announce, so a server that
// dies between the change and the delivery loses nothing (at-least-once; receivers de-duplicate on the event id).
// Every query of both tables lives here; the rules are in ../services/webhooks.ts.
import { type Generated, type Insertable, type Selectable, sql } from 'kysely';
import type { Db } from './database.ts';

export interface WebhookTable {
  id: string;
  url: string;
  /** JSON array of event names (services/webhooks.ts). */
  events: string;
  /** The HMAC-SHA256 key for the signature header (null: unsigned). Never returned by the API. */
  secret: string | null;
  created_at: number;
  created_by: string;
}

export interface WebhookOutboxTable {
  /** The event's id, sent to the receiver for de-duplication. */
  id: string;
  webhook_id: string;
  event: string;
  /** The event as JSON; the body sent is this plus `server` (services/webhook-delivery.ts). */
  payload: string;
  created_at: number;
  attempts: Generated<number>;
  next_attempt_at: number;
  delivered_at: number | null;
  /** Gave up after the last retry (kept for `webhook list`). */
  failed_at: number | null;
  last_status: number | null;
  last_error: string | null;
}

export type { Db };

export type WebhookRow = Selectable<WebhookTable>;
export type OutboxRow = Selectable<WebhookOutboxTable>;

/** An undelivered outbox row with what its delivery needs from its webhook. */
export interface DueRow {
  id: string;
  webhook_id: string;
  event: string;
  payload: string;
  created_at: number;
  attempts: number;
  next_attempt_at: number;
  url: string;
  secret: string | null;
}

/** Delivery counts and the last outcome of one webhook (`webhook list`). */
export interface OutboxStats {
  delivered: number;
  pending: number;
  failed: number;
  lastStatus: number | null;
  lastError: string | null;
  lastDeliveredAt: number | null;
}

export async function insertWebhook(db: Db, row: WebhookTable): Promise<void> {
  await db.insertInto('webhooks').values(row).execute();
}

/** Every webhook, oldest first. */
export async function allWebhooks(db: Db): Promise<WebhookRow[]> {
  return db.selectFrom('webhooks').selectAll().orderBy('created_at').orderBy('id').execute();
}

export async function findWebhook(db: Db, id: string): Promise<WebhookRow | undefined> {
  return db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Deletes a webhook and its outbox (nothing is sent to a removed webhook); false when there was none. */
export async function deleteWebhook(db: Db, id: string): Promise<boolean> {
  await db.deleteFrom('webhook_outbox').where('webhook_id', '=', id).execute();
  const r = await db.deleteFrom('webhooks').where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/**
 * Rows of a webhook neither delivered nor given up whose event is (or, with `not`, is not) one of `events`: what
 * a per-webhook cap counts (services/webhooks.ts keeps one cap per kind of event).
 */
export async function pendingCount(
  db: Db,
  webhookId: string,
  events: readonly string[],
  not = false,
): Promise<number> {
  const r = await db
    .selectFrom('webhook_outbox')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('webhook_id', '=', webhookId)
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .where('event', not ? 'not in' : 'in', events)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

/**
 * Payloads of a webhook's undelivered `event` rows that contain `fragment`: candidates for de-duplication, which
 * the caller confirms on the parsed payload (SQLite's LIKE ignores the case of ASCII letters).
 */
export async function pendingPayloadsLike(
  db: Db,
  webhookId: string,
  event: string,
  fragment: string,
): Promise<string[]> {
  const pattern = `%${fragment.replace(/[!%_]/g, '!$&')}%`;
  const rows = await db
    .selectFrom('webhook_outbox')
    .select('payload')
    .where('webhook_id', '=', webhookId)
    .where('event', '=', event)
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .where(sql<boolean>`payload like ${pattern} escape '!'`)
    .execute();
  return rows.map((r) => r.payload);
}

export async function insertOutbox(db: Db, row: Insertable<WebhookOutboxTable>): Promise<void> {
  await db.insertInto('webhook_outbox').values(row).execute();
}

/**
 * Up to `limit` rows due at `now`, the longest waiting first, at most `perWebhook` of any one webhook and none of
 * the webhooks in `skip` (busy or failing ones): one slow receiver cannot take every delivery slot.
 */
export async function dueRows(
  db: Db,
  now: number,
  limit: number,
  perWebhook: number,
  skip: readonly string[] = [],
): Promise<DueRow[]> {
  const ranked = db
    .selectFrom('webhook_outbox')
    .select((eb) => [
      'id',
      eb.fn
        .agg<number>('row_number')
        .over((ob) => ob.partitionBy('webhook_id').orderBy('next_attempt_at').orderBy('id'))
        .as('rn'),
    ])
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .where('next_attempt_at', '<=', now)
    .$if(skip.length > 0, (q) => q.where('webhook_id', 'not in', skip))
    .as('r');
  const rows = await db
    .selectFrom(ranked)
    .innerJoin('webhook_outbox as o', 'o.id', 'r.id')
    .innerJoin('webhooks as w', 'w.id', 'o.webhook_id')
    .select([
      'o.id',
      'o.webhook_id',
      'o.event',
      'o.payload',
      'o.created_at',
      'o.attempts',
      'o.next_attempt_at',
      'w.url',
      'w.secret',
    ])
    .where('r.rn', '<=', perWebhook)
    .orderBy('o.next_attempt_at')
    .orderBy('o.id')
    .limit(limit)
    .execute();
  // PostgreSQL answers bigint columns as numbers (type parser in database.ts); SQLite already does.
  return rows.map((r) => ({
    ...r,
    created_at: Number(r.created_at),
    next_attempt_at: Number(r.next_attempt_at),
  }));
}

/**
 * Claims a due row for one delivery attempt by moving its next attempt to `leaseUntil`, only if nobody moved it
 * since it was read (`seen`): of several workers (replicas) that read the same row, exactly one claims it. A
 * worker that dies mid-attempt leaves the row due again at `leaseUntil` (at-least-once).
 */
export async function claimRow(db: Db, id: string, seen: number, leaseUntil: number): Promise<boolean> {
  const r = await db
    .updateTable('webhook_outbox')
    .set({ next_attempt_at: leaseUntil })
    .where('id', '=', id)
    .where('next_attempt_at', '=', seen)
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * Gives a claimed row back without an attempt (the worker stopped mid-attempt): due again at `dueAt`, only if the
 * claim is still this worker's (`leaseUntil` unchanged), so a claim someone took since is left alone.
 */
export async function releaseClaim(db: Db, id: string, leaseUntil: number, dueAt: number): Promise<boolean> {
  const r = await db
    .updateTable('webhook_outbox')
    .set({ next_attempt_at: dueAt })
    .where('id', '=', id)
    .where('next_attempt_at', '=', leaseUntil)
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * Moves every undelivered row of a webhook due before `until` to `until`, attempts unchanged (the circuit
 * breaker of a failing receiver: its other events wait instead of each failing in turn). Returns the rows moved.
 */
export async function deferWebhook(db: Db, webhookId: string, until: number): Promise<number> {
  const r = await db
    .updateTable('webhook_outbox')
    .set({ next_attempt_at: until })
    .where('webhook_id', '=', webhookId)
    .where('next_attempt_at', '<', until)
    .where('delivered_at', 'is', null)
    .where('failed_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Records one attempt's outcome: delivered, to be retried at `nextAt`, or given up (`failedAt`). */
export async function recordAttempt(
  db: Db,
  id: string,
  a: {
    attempts: number;
    status: number | null;
    error: string | null;
    deliveredAt?: number;
    nextAt?: number;
    failedAt?: number;
  },
): Promise<void> {
  await db
    .updateTable('webhook_outbox')
    .set({
      attempts: a.attempts,
      last_status: a.status,
      last_error: a.error,
      ...(a.deliveredAt !== undefined ? { delivered_at: a.deliveredAt } : {}),
      ...(a.nextAt !== undefined ? { next_attempt_at: a.nextAt } : {}),
      ...(a.failedAt !== undefined ? { failed_at: a.failedAt } : {}),
    })
    .where('id', '=', id)
    .execute();
}

/** Forgets delivered and given-up rows created before `before` (the outbox is not an archive). */
export async function pruneOutbox(db: Db, before: number): Promise<number> {
  const r = await db
    .deleteFrom('webhook_outbox')
    .where('created_at', '<', before)
    .where((eb) => eb.or([eb('delivered_at', 'is not', null), eb('failed_at', 'is not', null)]))
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Every outbox row of a webhook, oldest first (tests and diagnosis). */
export async function outboxOf(db: Db, webhookId: string): Promise<OutboxRow[]> {
  return db
    .selectFrom('webhook_outbox')
    .selectAll()
    .where('webhook_id', '=', webhookId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
}

/** Delivery counts of one webhook and the outcome of its most recently created attempted row. */
export async function outboxStats(db: Db, webhookId: string): Promise<OutboxStats> {
  const counts = await db
    .selectFrom('webhook_outbox')
    .select((eb) => [
      eb.fn.count<number>('delivered_at').as('delivered'),
      eb.fn.count<number>('failed_at').as('failed'),
      eb.fn.countAll<number>().as('all'),
      eb.fn.max('delivered_at').as('last_delivered'),
    ])
    .where('webhook_id', '=', webhookId)
    .executeTakeFirstOrThrow();
  const last = await db
    .selectFrom('webhook_outbox')
    .select(['last_status', 'last_error'])
    .where('webhook_id', '=', webhookId)
    .where('attempts', '>', 0)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  const delivered = Number(counts.delivered);
  const failed = Number(counts.failed);
  return {
    delivered,
    failed,
    pending: Number(counts.all) - delivered - failed,
    lastStatus: last?.last_status ?? null,
    lastError: last?.last_error ?? null,
    lastDeliveredAt: counts.last_delivered === null ? null : Number(counts.last_delivered),
  };
}
