// Admin API for per-device visibility: a rollout's devices and a device's transactions across rollouts, each with
// the health checks the device reported (name, result, duration and a bounded excerpt of the output).
//
// The answers' shapes and the reading of device-written detail are in admin-history-views.ts, the JSON schemas
// in admin-history-schemas.ts, the queries in admin-history-queries.ts.
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { deviceHistory, type Paging, paging, rolloutDevices } from './admin-history-queries.ts';
import { deviceHistorySchema, rolloutDevicesSchema } from './admin-history-schemas.ts';
import type { DeviceHistoryPage, RolloutDevicesPage } from './admin-history-views.ts';

export function adminHistoryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  app.get(
    '/v1/admin/rollouts/:id/devices',
    { schema: rolloutDevicesSchema },
    async (req): Promise<RolloutDevicesPage> => {
      const id = (req.params as { id: number }).id;
      const q = req.query as Paging & { state?: string };
      return rolloutDevices(db, id, q.state, paging(q));
    },
  );

  app.get(
    '/v1/admin/devices/:id/history',
    { schema: deviceHistorySchema },
    async (req): Promise<DeviceHistoryPage> =>
      deviceHistory(db, (req.params as { id: string }).id, paging(req.query as Paging)),
  );
}
