// Check-ins in batches: concurrent check-ins that arrive together are handled in one database transaction
// with set-based reads and writes (group commit). Under load this turns N small transactions into one, which
// is what keeps check-in latency flat as fleets grow; with one device at a time it is a batch of one.
// The transaction itself is services/checkin.ts; this file only queues and retries.
import type { CheckinRequest } from '../protocol/device.ts';
import type { ServerContext } from './context.ts';
import {
  applyCheckinBatch,
  type CheckinDeps,
  type CheckinItem,
  type CheckinResult,
  ReleaseArtifacts,
} from './services/checkin.ts';
import type { ReportApplier } from './services/device-reports.ts';

export type { CheckinResult };

interface Pending extends CheckinItem {
  resolve: (a: CheckinResult) => void;
  reject: (e: unknown) => void;
}

const MAX_BATCH = 256;

/** Queues check-ins and applies them in batches, one transaction per batch. */
export class CheckinBatcher {
  private queue: Pending[] = [];
  private running = false;
  private readonly deps: CheckinDeps;

  constructor(ctx: ServerContext, applyReports: ReportApplier) {
    this.deps = { ctx, applyReports, artifacts: new ReleaseArtifacts() };
  }

  /** Queues one check-in; resolves when the batch holding it has committed. */
  submit(tokenHash: string, body: CheckinRequest): Promise<CheckinResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ tokenHash, body, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        settle(batch, await applyCheckinBatch(this.deps, batch));
      } catch (err) {
        // One bad check-in must not fail its neighbours: retry them one by one.
        if (batch.length === 1) batch[0].reject(err);
        else
          for (const p of batch) {
            try {
              settle([p], await applyCheckinBatch(this.deps, [p]));
            } catch (e) {
              p.reject(e);
            }
          }
      }
    }
    this.running = false;
  }
}

/** Resolves or rejects each pending check-in with its answer. */
function settle(batch: readonly Pending[], answers: Array<CheckinResult | Error>): void {
  batch.forEach((p, i) => {
    const a = answers[i];
    if (a instanceof Error) p.reject(a);
    else p.resolve(a);
  });
}
