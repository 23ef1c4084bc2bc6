// Admin API for operators: who am I, and (admins) adding, revoking, rotating and re-roling operators; an operator
// may add and revoke its own named API tokens. The rules are in ../services/operators.ts.
import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.ts';
import { forbidden } from '../errors.ts';
import { callerOf, type RequestOperator } from '../operator-request.ts';
import { ROLE_PERMISSIONS, ROLES, refusal } from '../roles.ts';
import { NAME_PATTERN } from '../services/operator-names.ts';

const name = { type: 'string', pattern: NAME_PATTERN } as const;
const role = { type: 'string', enum: [...ROLES] } as const;
const nullableInteger = { type: ['integer', 'null'] } as const;
const nameParams = { type: 'object', required: ['name'], properties: { name } } as const;
const tokenParams = {
  type: 'object',
  required: ['name', 'token'],
  properties: { name, token: name },
} as const;
const object = (properties: Record<string, unknown>) =>
  ({ type: 'object', required: Object.keys(properties), properties }) as const;
const string = { type: 'string' } as const;

const whoami = object({
  name: { type: 'string' },
  role: { type: 'string' },
  token: { type: 'string' },
  actor: { type: 'string' },
  permissions: { type: 'array', items: { type: 'string' } },
});
const operatorList = object({
  operators: {
    type: 'array',
    items: object({
      name: { type: 'string' },
      role: { type: 'string' },
      created_at: { type: 'integer' },
      created_by: { type: 'string' },
      revoked_at: nullableInteger,
      tokens: {
        type: 'array',
        items: object({
          name: { type: 'string' },
          created_at: { type: 'integer' },
          expires_at: nullableInteger,
          revoked_at: nullableInteger,
          last_used_at: nullableInteger,
        }),
      },
    }),
  },
});

type NameParams = { Params: { name: string } };

/** An operator may manage its own tokens; anyone else's needs the admin permission (403 otherwise). */
function ownOrAdmin(caller: RequestOperator, operator: string): void {
  if (caller.name === operator) return;
  const why = refusal(caller.role, 'admin', "manage another operator's tokens");
  if (why) throw forbidden(why);
}

/** Registers the operator routes (inside the admin plugin's authenticated scope). */
export function adminOperatorRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const ops = ctx.operators;

  app.get(
    '/v1/admin/whoami',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'whoami',
        summary: 'Who this token belongs to: operator, role, token name, audit actor and permissions',
        tags: ['operators'],
        response: { 200: whoami },
      },
    },
    async (req) => {
      const c = callerOf(req);
      return { ...c, permissions: [...ROLE_PERMISSIONS[c.role]] };
    },
  );

  app.get(
    '/v1/admin/operators',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'listOperators',
        summary: 'Every operator with its role and tokens (names and dates, never the tokens)',
        tags: ['operators'],
        response: { 200: operatorList },
      },
    },
    async () => ({ operators: await ops.list() }),
  );

  app.post<{ Body: { name: string; role: string } }>(
    '/v1/admin/operators',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'addOperator',
        summary: 'Add an operator; its token `default` is returned once',
        tags: ['operators'],
        response: { 201: object({ name: string, role: string, token: string }) },
        body: {
          type: 'object',
          required: ['name', 'role'],
          additionalProperties: false,
          properties: { name, role },
        },
      },
    },
    async (req, reply) => {
      const added = await ops.add(callerOf(req).actor, req.body.name, req.body.role);
      reply.code(201);
      return added;
    },
  );

  app.post<NameParams>(
    '/v1/admin/operators/:name/revoke',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'revokeOperator',
        summary: 'Revoke an operator: all its tokens are refused from the next request (not the last admin)',
        tags: ['operators'],
        response: { 200: object({ name: string, revoked_at: { type: 'integer' } }) },
        params: nameParams,
      },
    },
    async (req) => ops.revoke(callerOf(req).actor, req.params.name),
  );

  app.post<NameParams>(
    '/v1/admin/operators/:name/rotate',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'rotateOperatorToken',
        summary: "Replace an operator's token `default` (or `bootstrap`); the new one is returned once",
        tags: ['operators'],
        response: { 200: object({ name: string, token: string }) },
        params: nameParams,
      },
    },
    async (req) => ops.rotate(callerOf(req).actor, req.params.name),
  );

  app.post<NameParams & { Body: { role: string } }>(
    '/v1/admin/operators/:name/role',
    {
      config: { permission: 'admin' },
      schema: {
        operationId: 'setOperatorRole',
        summary: "Change an operator's role (the last admin may not be demoted)",
        tags: ['operators'],
        response: { 200: object({ name: string, role: string }) },
        params: nameParams,
        body: { type: 'object', required: ['role'], additionalProperties: false, properties: { role } },
      },
    },
    async (req) => ops.setRole(callerOf(req).actor, req.params.name, req.body.role),
  );

  app.post<NameParams & { Body: { name: string; expires_in_s?: number } }>(
    '/v1/admin/operators/:name/tokens',
    {
      // Any role for its own tokens; the handler asks for admin when the operator is someone else.
      config: { permission: 'read' },
      schema: {
        operationId: 'addOperatorToken',
        summary: 'Add a named API token (for a CI job), optionally expiring; returned once',
        tags: ['operators'],
        response: {
          201: object({ operator: string, name: string, token: string, expires_at: nullableInteger }),
        },
        params: nameParams,
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name, expires_in_s: { type: 'integer', minimum: 1, maximum: 10 * 365 * 86400 } },
        },
      },
    },
    async (req, reply) => {
      const caller = callerOf(req);
      ownOrAdmin(caller, req.params.name);
      const own = caller.name === req.params.name;
      const added = await ops.addToken(
        caller.actor,
        req.params.name,
        req.body.name,
        req.body.expires_in_s,
        own ? caller.expiresAt : null,
      );
      reply.code(201);
      return added;
    },
  );

  app.post<{ Params: { name: string; token: string } }>(
    '/v1/admin/operators/:name/tokens/:token/revoke',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'revokeOperatorToken',
        summary: "Revoke one of an operator's named tokens (refused from the next request)",
        tags: ['operators'],
        response: { 200: object({ operator: string, name: string, revoked_at: { type: 'integer' } }) },
        params: tokenParams,
      },
    },
    async (req) => {
      const caller = callerOf(req);
      ownOrAdmin(caller, req.params.name);
      return ops.revokeToken(caller.actor, req.params.name, req.params.token);
    },
  );
}
