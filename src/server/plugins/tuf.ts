// The TUF area as one encapsulated Fastify plugin: the organisation's signed metadata and targets and the
// vendors' metadata, public (devices verify every byte themselves). The vendor upload is an admin route and
// lives in the admin plugin (vendorTufAdminRoutes).
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { tufRoutes } from '../routes/tuf.ts';

/** Registers the public TUF routes in their own scope. */
export async function tufPlugin(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  await app.register(async (scope) => tufRoutes(scope, ctx));
}
