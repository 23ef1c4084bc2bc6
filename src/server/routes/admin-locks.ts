// Admin API for the reboot semaphore (FleetLock, issue 14): list groups and holders, set a group's slots and
// lease, release a holder's slot. The rules are in ../services/fleet-lock.ts.
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { callerOf } from '../operator-request.ts';
import {
  type FleetLockOptions,
  type LockDeps,
  listLocks,
  releaseHolder,
  setGroup,
} from '../services/fleet-lock.ts';

// The protocol's group charset; ids as routes/fleetlock.ts accepts them.
const group = { type: 'string', pattern: '^[a-zA-Z0-9.-]{1,256}$' } as const;
const id = { type: 'string', pattern: '^[a-zA-Z0-9._:@-]{1,256}$' } as const;
/** A lease from one second to one week: a reboot that takes longer than a week is a node to release by hand. */
const MAX_LEASE_MS = 7 * 86_400_000;

const nullable = (type: string) => ({ type: [type, 'null'] }) as const;
const object = (properties: Record<string, unknown>) =>
  ({ type: 'object', required: Object.keys(properties), properties }) as const;
const lockList = object({
  now: { type: 'integer' },
  groups: {
    type: 'array',
    items: object({
      name: { type: 'string' },
      slots: { type: 'integer' },
      lease_ms: { type: 'integer' },
      updated_at: nullable('integer'),
      updated_by: nullable('string'),
      holders: {
        type: 'array',
        items: object({
          id: { type: 'string' },
          acquired_at: { type: 'integer' },
          expires_at: { type: 'integer' },
        }),
      },
    }),
  },
});

/** Registers the lock routes (inside the admin plugin's authenticated scope). */
export function adminLockRoutes(app: FastifyInstance, ctx: ServerContext, options: FleetLockOptions): void {
  const deps: LockDeps = { store: ctx.store, clock: ctx.clock, options };

  app.get(
    '/v1/admin/locks',
    {
      config: { permission: 'read' },
      schema: {
        summary:
          'Every reboot lock group with its slots, lease and holders (only those whose lease still runs)',
        operationId: 'listLocks',
        tags: ['fleetlock'],
        response: { 200: lockList },
      },
    },
    async () => listLocks(deps),
  );

  app.put<{ Params: { group: string }; Body: { slots: number; lease_ms: number } }>(
    '/v1/admin/locks/:group',
    {
      config: { permission: 'operate' },
      schema: {
        summary: "Create or change a reboot lock group's slots and lease (current holders keep their lease)",
        operationId: 'setLockGroup',
        tags: ['fleetlock'],
        params: object({ group }),
        response: {
          200: object({
            name: { type: 'string' },
            slots: { type: 'integer' },
            lease_ms: { type: 'integer' },
          }),
        },
        body: {
          type: 'object',
          required: ['slots', 'lease_ms'],
          additionalProperties: false,
          properties: {
            slots: { type: 'integer', minimum: 1, maximum: 100_000 },
            lease_ms: { type: 'integer', minimum: 1000, maximum: MAX_LEASE_MS },
          },
        },
      },
    },
    async (req) => {
      const { group: name } = req.params;
      await setGroup(deps, callerOf(req).actor, name, req.body.slots, req.body.lease_ms);
      return { name, slots: req.body.slots, lease_ms: req.body.lease_ms };
    },
  );

  app.delete<{ Params: { group: string; id: string }; Querystring: { reason?: string } }>(
    '/v1/admin/locks/:group/holders/:id',
    {
      config: { permission: 'operate' },
      schema: {
        summary: "Release a holder's slot (a node that will not reach steady state), audited with the reason",
        operationId: 'releaseLockHolder',
        tags: ['fleetlock'],
        params: object({ group, id }),
        response: {
          200: object({ group: { type: 'string' }, id: { type: 'string' }, released: { type: 'boolean' } }),
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { reason: { type: 'string', minLength: 1, maxLength: 500 } },
        },
      },
    },
    async (req) => {
      const { group: name, id: holder } = req.params;
      await releaseHolder(deps, callerOf(req).actor, name, holder, req.query.reason);
      return { group: name, id: holder, released: true };
    },
  );
}
