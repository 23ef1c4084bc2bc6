// The web dashboard as one encapsulated Fastify plugin: static files only (the page holds no data; every API
// call it makes carries the admin token and goes to the admin plugin).
import type { FastifyInstance } from 'fastify';
import { DEFAULT_WEB_DIR, webRoutes } from '../routes/web.ts';

/** Registers the dashboard's routes in their own scope, serving `dir` (default: the built dist/web). */
export async function webPlugin(app: FastifyInstance, dir: string = DEFAULT_WEB_DIR): Promise<void> {
  await app.register(async (scope) => webRoutes(scope, dir));
}
