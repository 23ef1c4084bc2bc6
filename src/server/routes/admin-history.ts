// Admin API for per-device visibility: a rollout's devices and a device's transactions across rollouts, each with
// the health checks the device reported (name, result, duration and a bounded excerpt of the output).
//
// The answers' shapes and the reading of device-written detail are in ../services/history-views.ts, the queries
// in ../services/history.ts, the JSON schemas in admin-history-schemas.ts.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AssignmentState } from '../../engine/rollout-state.ts';
import type { ServerContext } from '../context.ts';
import { deviceHistory, type Paging, paging, rolloutDevices } from '../services/history.ts';
import type { DeviceHistoryPage, RolloutDevicesPage } from '../services/history-views.ts';
import { deviceHistorySchema, rolloutDevicesSchema } from './admin-history-schemas.ts';

/** Registers the visibility routes (inside the admin plugin). */
export function adminHistoryRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  /** GET /v1/admin/rollouts/:id/devices: a page of a rollout's devices (all, or those in one state). */
  const ofRollout = (
    req: FastifyRequest<{ Params: { id: number }; Querystring: Paging & { state?: AssignmentState } }>,
  ): Promise<RolloutDevicesPage> => rolloutDevices(db, req.params.id, req.query.state, paging(req.query));

  /** GET /v1/admin/devices/:id/history: a page of a device's transactions across rollouts. */
  const ofDevice = (
    req: FastifyRequest<{ Params: { id: string }; Querystring: Paging }>,
  ): Promise<DeviceHistoryPage> => deviceHistory(db, req.params.id, paging(req.query));

  const read = { permission: 'read' } as const;
  app.get('/v1/admin/rollouts/:id/devices', { config: read, schema: rolloutDevicesSchema }, ofRollout);
  app.get('/v1/admin/devices/:id/history', { config: read, schema: deviceHistorySchema }, ofDevice);
}
