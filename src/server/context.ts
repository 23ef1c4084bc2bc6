// What every route handler gets: the store, blob store, engine driver, clock and metrics.
import type { Logger } from 'pino';
import type { AdminToken } from './admin-token.ts';
import type { BlobStore } from './blobs.ts';
import type { Store } from './db/database.ts';
import type { Guards } from './limits.ts';
import type { Metrics } from './metrics.ts';
import type { RolloutDriver } from './rollout-driver.ts';
import type { WakeBus } from './wake/bus.ts';
import type { WakeHub } from './wake/hub.ts';

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
  /** Wake-ups: `bus` is told of devices whose desired answer may have changed; `hub` holds their waits. */
  wake: { bus: WakeBus; hub: WakeHub };
}

// Kept here for the route files that import it from the context; its home is errors.ts.
export { HttpError } from './errors.ts';
