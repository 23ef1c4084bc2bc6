// Check-ins in batches: concurrent check-ins that arrive together are handled in one database transaction
// with set-based reads and writes (group commit). Under load this turns N small transactions into one, which
// is what keeps check-in latency flat as fleets grow; with one device at a time it is a batch of one.
// The transaction itself is services/checkin.ts; this file only queues, retries, and writes last-seen times a
// moment later (SEEN_FLUSH_MS), in one transaction for all the batches of that moment.
import type { CheckinRequest } from '../protocol/device.ts';
import type { ServerContext } from './context.ts';
import {
  applyCheckinBatch,
  type BatchOutcome,
  type CheckinDeps,
  type CheckinItem,
  type CheckinResult,
  ReleaseArtifacts,
  recordSeen,
} from './services/checkin.ts';
import type { ReportApplier } from './services/device-reports.ts';

export type { CheckinResult };

interface Pending extends CheckinItem {
  resolve: (a: CheckinResult) => void;
  reject: (e: unknown) => void;
}

const MAX_BATCH = 256;

/**
 * How long a last-seen time may wait in memory before it is written. Writing it is the only write of a steady
 * check-in (it dirties the device's page in every batch's commit); deferred, a device that checks in several times
 * meanwhile is written once. Its cost: last_seen_at shows up to this much later, and a crash loses at most this
 * much of it (never a report: reports are written in the batch, before the answer).
 */
export const SEEN_FLUSH_MS = 250;

/** Queues check-ins and applies them in batches, one transaction per batch. */
export class CheckinBatcher {
  private queue: Pending[] = [];
  private running = false;
  private readonly deps: CheckinDeps;
  /** Devices seen by committed batches, not yet written: device id → time of its latest check-in. */
  private seen = new Map<string, number>();
  private lastFlush = performance.now();
  private flushTimer: NodeJS.Timeout | null = null;
  private closing = false;

  constructor(ctx: ServerContext, applyReports: ReportApplier) {
    this.deps = { ctx, applyReports, artifacts: new ReleaseArtifacts() };
  }

  /** Queues one check-in; resolves when the batch holding it has committed. */
  submit(tokenHash: string, body: CheckinRequest): Promise<CheckinResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ tokenHash, body, resolve, reject });
      this.kick();
    });
  }

  /** Writes the last-seen times still held (the server is stopping); later check-ins write theirs at once. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.kick();
    while (this.running) await new Promise((r) => setImmediate(r));
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.drain());
  }

  private flushDue(): boolean {
    return this.seen.size > 0 && (this.closing || performance.now() - this.lastFlush >= SEEN_FLUSH_MS);
  }

  private async drain(): Promise<void> {
    this.flushTimer = null;
    while (this.queue.length > 0 || this.flushDue()) {
      if (this.flushDue()) await this.flushSeen();
      if (this.queue.length === 0) continue;
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        this.settle(batch, await applyCheckinBatch(this.deps, batch));
      } catch (err) {
        // One bad check-in must not fail its neighbours: retry them one by one.
        if (batch.length === 1) batch[0].reject(err);
        else
          for (const p of batch) {
            try {
              this.settle([p], await applyCheckinBatch(this.deps, [p]));
            } catch (e) {
              p.reject(e);
            }
          }
      }
    }
    this.running = false;
    // Times still held are written when the next batch comes, or after the rest of the interval at the latest.
    if (this.seen.size > 0 && !this.flushTimer && !this.closing) {
      const wait = Math.max(0, SEEN_FLUSH_MS - (performance.now() - this.lastFlush));
      this.flushTimer = setTimeout(() => this.kick(), wait);
      this.flushTimer.unref();
    }
  }

  /** Writes the held last-seen times; on failure they stay held (a later time of a device wins) and are retried. */
  private async flushSeen(): Promise<void> {
    const seen = this.seen;
    this.seen = new Map();
    this.lastFlush = performance.now();
    try {
      await recordSeen(this.deps.ctx, seen);
    } catch (err) {
      for (const [id, at] of seen) if ((this.seen.get(id) ?? -1) < at) this.seen.set(id, at);
      this.deps.ctx.log.warn({ err }, 'could not record when devices were last seen; will retry');
      if (this.closing) this.seen.clear(); // the store is going away: nothing left to retry with
    }
  }

  /** Resolves or rejects each pending check-in with its answer; remembers the devices the batch saw. */
  private settle(batch: readonly Pending[], outcome: BatchOutcome): void {
    // The batch committed: its devices were seen at its time.
    for (const id of outcome.seen) this.seen.set(id, outcome.at);
    batch.forEach((p, i) => {
      const a = outcome.answers[i];
      if (a instanceof Error) p.reject(a);
      else p.resolve(a);
    });
  }
}
