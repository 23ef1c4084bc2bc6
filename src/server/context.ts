// What every route handler gets: the store, blob store, engine driver, clock and metrics.
import type { Logger } from 'pino';
import type { BlobStore } from './blobs.ts';
import type { Governance, PrometheusOptions } from './config.ts';
import type { Store } from './db/database.ts';
import type { Guards } from './limits.ts';
import type { Metrics } from './metrics.ts';
import type { RolloutDriver } from './rollout-driver.ts';
import type { Operators } from './services/operators.ts';
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
  /** Who may use the admin API, and through which tokens (authenticates every admin request). */
  operators: Operators;
  /** Any working operator token may download blobs (plugins/device.ts); the same service as `operators`. */
  admin: Pick<Operators, 'matches'>;
  guards: Guards;
  /** The server-wide governance rules (server.yaml `governance:`): four eyes. */
  governance: Governance;
  /** server.yaml `prometheus:` for metric gates; null: none (a plan with gates is refused). */
  prometheus: PrometheusOptions | null;
  /** Wake-ups: `bus` is told of devices whose desired answer may have changed; `hub` holds their waits. */
  wake: { bus: WakeBus; hub: WakeHub };
}

// Kept here for the route files that import it from the context; its home is errors.ts.
export { HttpError } from './errors.ts';
