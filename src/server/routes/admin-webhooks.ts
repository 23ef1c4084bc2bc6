// Admin API for webhooks: add (admin), list with delivery status (read), remove (admin), send a test event
// (operate). The rules are in ../services/webhooks.ts; the payloads and signature in docs/webhooks.md.
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { callerOf } from '../operator-request.ts';
import {
  addWebhook,
  listWebhooks,
  removeWebhook,
  testWebhook,
  WEBHOOK_EVENTS,
} from '../services/webhooks.ts';

const id = { type: 'string', pattern: '^wh-[a-z0-9-]{1,40}$' } as const;
const idParams = { type: 'object', required: ['id'], properties: { id } } as const;
const nullable = (type: string) => ({ type: [type, 'null'] }) as const;
const object = (properties: Record<string, unknown>) =>
  ({ type: 'object', required: Object.keys(properties), properties }) as const;

const webhookView = object({
  id: { type: 'string' },
  url: { type: 'string' },
  events: { type: 'array', items: { type: 'string' } },
  created_at: { type: 'integer' },
  created_by: { type: 'string' },
  signed: { type: 'boolean' },
  delivered: { type: 'integer' },
  pending: { type: 'integer' },
  failed: { type: 'integer' },
  last_status: nullable('integer'),
  last_error: nullable('string'),
  last_delivered_at: nullable('integer'),
});

type IdParams = { Params: { id: string } };

/** Registers the webhook routes (inside the admin plugin's authenticated scope). */
export function adminWebhookRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post<{ Body: { url: string; events: string[]; secret?: string } }>(
    '/v1/admin/webhooks',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'addWebhook',
        summary: 'Add a webhook; its signing secret (given or generated) is returned once',
        tags: ['webhooks'],
        body: {
          type: 'object',
          required: ['url', 'events'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', minLength: 1, maxLength: 2048 },
            events: {
              type: 'array',
              minItems: 1,
              maxItems: WEBHOOK_EVENTS.length,
              items: { type: 'string', maxLength: 64 },
            },
            secret: { type: 'string', minLength: 16, maxLength: 256 },
          },
        },
        response: {
          201: object({
            id: { type: 'string' },
            url: { type: 'string' },
            events: { type: 'array', items: { type: 'string' } },
            secret: { type: 'string' },
          }),
        },
      },
    },
    async (req, reply) => {
      const added = await addWebhook(ctx.store, callerOf(req).actor, ctx.clock(), req.body);
      reply.code(201);
      return added;
    },
  );

  app.get(
    '/v1/admin/webhooks',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'listWebhooks',
        summary: 'Every webhook with its delivery status (never its secret)',
        tags: ['webhooks'],
        response: { 200: object({ webhooks: { type: 'array', items: webhookView } }) },
      },
    },
    async () => ({ webhooks: await listWebhooks(ctx.store.db) }),
  );

  app.delete<IdParams>(
    '/v1/admin/webhooks/:id',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'removeWebhook',
        summary: 'Remove a webhook; its undelivered events are dropped',
        tags: ['webhooks'],
        params: idParams,
        response: { 200: object({ removed: { type: 'string' } }) },
      },
    },
    async (req) => {
      await removeWebhook(ctx.store, callerOf(req).actor, ctx.clock(), req.params.id);
      return { removed: req.params.id };
    },
  );

  app.post<IdParams>(
    '/v1/admin/webhooks/:id/test',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'testWebhook',
        summary: 'Queue a `webhook.test` event for this webhook; returns its event id',
        tags: ['webhooks'],
        params: idParams,
        response: { 202: object({ id: { type: 'string' } }) },
      },
    },
    async (req, reply) => {
      const out = await testWebhook(ctx.store, callerOf(req).actor, ctx.clock(), req.params.id);
      reply.code(202);
      return out;
    },
  );
}
