// What every route handler gets: the store, blob store, engine driver, clock and metrics.
import type { Logger } from 'pino';
import type { AdminToken } from './admin-token.ts';
import type { BlobStore } from './blobs.ts';
import type { Store } from './db/database.ts';
import type { Guards } from './limits.ts';
import type { Metrics } from './metrics.ts';
import type { RolloutDriver } from './rollout-driver.ts';

export interface ServerContext {
  store: Store;
  blobs: BlobStore;
  driver: RolloutDriver;
  metrics: Metrics;
  log: Logger;
  clock: () => number;
  pollSeconds: number;
  dataDir: string;
  admin: AdminToken;
  guards: Guards;
}

/** An error with an HTTP status and a one-line message, turned into {error, message} by the server. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}
