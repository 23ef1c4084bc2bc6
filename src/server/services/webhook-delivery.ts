// The webhook delivery worker: sends due outbox rows (services/webhooks.ts), signed, and retries failures with
// exponential backoff until they are delivered or given up. Each row is claimed before its attempt, so several
// replicas on one database do not send the same row at the same time; a worker that dies mid-attempt leaves
// the row due again after its claim ends (at-least-once: receivers de-duplicate on the event id). A webhook
// gets at most `perWebhook` attempts in flight, and one that keeps failing has its other rows pushed back
// (a circuit breaker), so a receiver that hangs or fails slows only itself.
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Store } from '../db/database.ts';
import {
  claimRow,
  type DueRow,
  deferWebhook,
  dueRows,
  pruneOutbox,
  recordAttempt,
  releaseClaim,
} from '../db/webhooks.ts';
import type { Metrics } from '../metrics.ts';
import { DEFAULT_OUTBOX_CAPS, type OutboxCaps, outboxRefused, setOutboxCaps } from './webhooks.ts';

export interface WebhookDeliveryOptions {
  /** The server's public URL, sent as `server` in every payload (null when unknown). */
  publicUrl: string | null;
  /** How often the outbox is read for due rows. */
  pollMs: number;
  /** One attempt's limit, connection to response headers. */
  timeoutMs: number;
  /** Deliveries in flight at once (this process). */
  maxConcurrent: number;
  /** Deliveries in flight at once to one webhook (this process). */
  perWebhook: number;
  /** After this many failed attempts in a row, a webhook's other due rows wait for its next retry. */
  breakerFailures: number;
  /** Undelivered rows per webhook and kind of event (services/webhooks.ts); set for the whole process. */
  outboxCaps: OutboxCaps;
  /** The first retry's delay; each next one doubles, up to `maxBackoffMs` (±20 % jitter). */
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Given up after this many attempts, or this long after the event, whichever comes first. */
  maxAttempts: number;
  maxAgeMs: number;
  /** Delivered and given-up rows are forgotten after this long. */
  keepMs: number;
}

export const DEFAULT_DELIVERY: WebhookDeliveryOptions = {
  publicUrl: null,
  pollMs: 1000,
  timeoutMs: 10_000,
  maxConcurrent: 8,
  perWebhook: 2,
  breakerFailures: 5,
  outboxCaps: DEFAULT_OUTBOX_CAPS,
  minBackoffMs: 5000,
  maxBackoffMs: 3_600_000,
  maxAttempts: 30,
  maxAgeMs: 24 * 3_600_000,
  keepMs: 7 * 24 * 3_600_000,
};

const PRUNE_EVERY_MS = 10 * 60_000;
const ERROR_MAX = 300;

/** The signature header's value: HMAC-SHA256 over `timestamp.body`, so a captured body cannot be replayed later. */
export function signature(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** The delay before retry number `attempts` (1 = the first retry). */
export function backoff(
  attempts: number,
  o: Pick<WebhookDeliveryOptions, 'minBackoffMs' | 'maxBackoffMs'>,
): number {
  const base = Math.min(o.maxBackoffMs, o.minBackoffMs * 2 ** Math.min(attempts - 1, 30));
  // Jitter spreads the retries of many rows that failed together (a receiver back from an outage).
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** One attempt's result: the HTTP status (null: none) and, unless 2xx, why it failed; or cut short by stop(). */
type Outcome = { status: number | null; error: string | null } | 'stopped';

// The abort reason of stop(), told apart from the timeout's.
const STOPPING = new Error('the webhook worker is stopping');

export class WebhookDelivery {
  readonly opts: WebhookDeliveryOptions;
  private timer: NodeJS.Timeout | null = null;
  private stopped = true;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly aborts = new Set<AbortController>();
  /** Attempts in flight per webhook id. */
  private readonly busy = new Map<string, number>();
  /** Failed attempts in a row per webhook id, and until when its rows wait (circuit open). */
  private readonly failures = new Map<string, number>();
  private readonly openUntil = new Map<string, number>();
  private lastPrune = 0;
  private refusedSeen = outboxRefused(); // refusals before this worker are not its own

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly clock: () => number,
    opts: Partial<WebhookDeliveryOptions> = {},
    private readonly metrics?: Pick<Metrics, 'webhookDeliveries' | 'webhookEventsDropped'>,
  ) {
    this.opts = { ...DEFAULT_DELIVERY, ...opts };
    setOutboxCaps(this.opts.outboxCaps);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /**
   * Stops reading the outbox and aborts attempts in flight. Their rows are given back due, not counted as
   * attempts: a rolling restart does not use up retries.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const a of this.aborts) a.abort(STOPPING);
    await Promise.allSettled([...this.inFlight]);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.tick()
        .catch((err) => this.log.warn({ err }, 'webhook outbox read failed'))
        .finally(() => this.schedule(this.opts.pollMs));
    }, ms);
    this.timer.unref();
  }

  /** Claims and starts as many due rows as there is room for; returns when they are started, not done. */
  private async tick(): Promise<void> {
    const now = this.clock();
    // Events refused by a step or a report (which have no metrics at hand) reach the counter here.
    const refused = outboxRefused();
    if (refused > this.refusedSeen)
      this.metrics?.webhookEventsDropped.inc({ reason: 'outbox-full' }, refused - this.refusedSeen);
    this.refusedSeen = refused;
    if (now - this.lastPrune >= PRUNE_EVERY_MS) {
      this.lastPrune = now;
      await pruneOutbox(this.store.db, now - this.opts.keepMs);
    }
    const room = this.opts.maxConcurrent - this.inFlight.size;
    if (room <= 0) return;
    const inFlightTo = (id: string) => this.busy.get(id) ?? 0;
    const skip = new Set<string>();
    for (const [id, n] of this.busy) if (n >= this.opts.perWebhook) skip.add(id);
    for (const [id, until] of this.openUntil) if (until > now) skip.add(id);
    for (const row of await dueRows(this.store.db, now, room, this.opts.perWebhook, [...skip])) {
      if (this.stopped) return;
      if (inFlightTo(row.webhook_id) >= this.opts.perWebhook) continue;
      // Claimed until the attempt must be over, with a margin; past that the row is anyone's again.
      const lease = now + this.opts.timeoutMs + 5000;
      if (!(await claimRow(this.store.db, row.id, row.next_attempt_at, lease))) continue;
      this.busy.set(row.webhook_id, inFlightTo(row.webhook_id) + 1);
      const p: Promise<void> = this.attempt(row, lease)
        .catch((err) => this.log.warn({ err, event: row.id }, 'webhook attempt not recorded'))
        .finally(() => {
          this.inFlight.delete(p);
          const n = inFlightTo(row.webhook_id) - 1;
          if (n > 0) this.busy.set(row.webhook_id, n);
          else this.busy.delete(row.webhook_id);
        });
      this.inFlight.add(p);
    }
  }

  private async attempt(row: DueRow, lease: number): Promise<void> {
    const out = await this.send(row);
    // Cut short by stop(): not the receiver's failure. Due again at once, here after a restart or elsewhere.
    if (out === 'stopped') {
      await releaseClaim(this.store.db, row.id, lease, row.next_attempt_at);
      return;
    }
    const now = this.clock();
    const attempts = row.attempts + 1;
    const base = { attempts, status: out.status, error: out.error };
    if (out.error === null) {
      this.failures.delete(row.webhook_id);
      this.openUntil.delete(row.webhook_id);
      this.metrics?.webhookDeliveries.inc({ result: 'delivered' });
      return recordAttempt(this.store.db, row.id, { ...base, deliveredAt: now });
    }
    const nextAt = now + backoff(attempts, this.opts);
    if (attempts >= this.opts.maxAttempts || nextAt - row.created_at > this.opts.maxAgeMs) {
      this.metrics?.webhookDeliveries.inc({ result: 'failed' });
      this.log.warn({ event: row.id, attempts, error: out.error }, 'webhook event given up');
      await recordAttempt(this.store.db, row.id, { ...base, failedAt: now });
    } else {
      this.metrics?.webhookDeliveries.inc({ result: 'retried' });
      await recordAttempt(this.store.db, row.id, { ...base, nextAt });
    }
    await this.failed(row.webhook_id, now);
  }

  /**
   * Counts a webhook's failure in a row; from `breakerFailures` on, its other rows wait (circuit open) instead
   * of each spending an attempt on a receiver that is down, longer with each further failure. The first rows
   * due after that are the probes: one success closes the circuit.
   */
  private async failed(webhookId: string, now: number): Promise<void> {
    const n = (this.failures.get(webhookId) ?? 0) + 1;
    this.failures.set(webhookId, n);
    if (n < this.opts.breakerFailures) return;
    const until = now + backoff(n - this.opts.breakerFailures + 1, this.opts);
    this.openUntil.set(webhookId, until);
    const moved = await deferWebhook(this.store.db, webhookId, until);
    if (n === this.opts.breakerFailures)
      this.log.warn({ webhook: webhookId, failures: n, moved }, 'webhook failing: its events wait');
  }

  /** One POST: no redirects followed, the answer's body not read; 2xx is delivered. */
  private async send(row: DueRow): Promise<Outcome> {
    const body = JSON.stringify({ ...JSON.parse(row.payload), server: this.opts.publicUrl });
    const ts = Math.floor(this.clock() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'ringfence-webhook/1',
      'x-ringfence-event': row.event,
      'x-ringfence-delivery': row.id,
      'x-ringfence-timestamp': String(ts),
    };
    if (row.secret !== null) headers['x-ringfence-signature'] = signature(row.secret, ts, body);
    const abort = new AbortController();
    this.aborts.add(abort);
    const timer = setTimeout(() => abort.abort(), this.opts.timeoutMs);
    try {
      const res = await fetch(row.url, {
        method: 'POST',
        headers,
        body,
        redirect: 'manual',
        signal: abort.signal,
      });
      // The answer's body means nothing to us; not reading it keeps a hostile receiver from costing memory.
      await res.body?.cancel().catch(() => {});
      if (res.status >= 200 && res.status < 300) return { status: res.status, error: null };
      const why = res.status >= 300 && res.status < 400 ? 'redirect not followed' : 'not 2xx';
      return { status: res.status, error: `HTTP ${res.status} (${why})` };
    } catch (e) {
      if (abort.signal.reason === STOPPING) return 'stopped';
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const why = abort.signal.aborted
        ? `no answer within ${this.opts.timeoutMs} ms`
        : (err.cause?.code ?? err.cause?.message ?? err.message);
      return { status: null, error: String(why).slice(0, ERROR_MAX) };
    } finally {
      clearTimeout(timer);
      this.aborts.delete(abort);
    }
  }
}
