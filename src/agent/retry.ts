// Retry policy for transient failures (download, server unreachable): exponential backoff with jitter.
// Health failures are never retried: a release that failed its checks is rolled back and quarantined.
import type { FailureClass } from './journal.ts';

export const TRANSIENT: ReadonlySet<FailureClass> = new Set(['download']);

/** Delay before retry number `attempt` (1-based): base·2^(attempt-1), capped, scaled by jitter in [0.5, 1). */
export function backoff(
  attempt: number,
  base: number,
  max: number,
  random: () => number = Math.random,
): number {
  const raw = Math.min(max, base * 2 ** Math.min(attempt - 1, 30));
  return Math.round(raw * (0.5 + random() * 0.5));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
