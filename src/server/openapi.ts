// Publishes the HTTP API as OpenAPI 3.1, built from the JSON schemas the routes validate with.
import type { FastifySchema } from 'fastify';

export interface RouteDoc {
  method: string | string[];
  url: string;
  schema: FastifySchema;
  /** What an admin route needs (roles.ts), published as `x-permission`. */
  permission?: string;
}

/** The `properties` (and `required`) of a params or querystring schema, whatever shape it was given in. */
function objectSchema(s: unknown): { properties: Record<string, unknown>; required: string[] } {
  const o = typeof s === 'object' && s !== null ? s : {};
  const properties =
    'properties' in o && typeof o.properties === 'object' && o.properties !== null ? o.properties : {};
  const required = 'required' in o && Array.isArray(o.required) ? o.required.map(String) : [];
  return { properties: { ...properties }, required };
}

/** The response schemas by status, when the route declares any. */
function responses(s: unknown): Record<string, unknown> {
  return typeof s === 'object' && s !== null ? { ...s } : {};
}

/** Builds the OpenAPI document from the registered routes. */
export function openApiDocument(routes: RouteDoc[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
    const pathParams = objectSchema(r.schema.params).properties;
    const params: Array<{ name: string; in: string; required: boolean; schema: unknown }> = [
      ...r.url.matchAll(/:([A-Za-z_][A-Za-z0-9_]*)/g),
    ].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: pathParams[m[1]] ?? { type: 'string' },
    }));
    const query = objectSchema(r.schema.querystring);
    for (const [name, schema] of Object.entries(query.properties))
      params.push({ name, in: 'query', required: query.required.includes(name), schema });
    const answers: Record<string, unknown> = {
      '200': { description: 'OK' },
      '4XX': { description: '{error, message}' },
    };
    for (const [status, schema] of Object.entries(responses(r.schema.response)))
      answers[status] = { description: 'OK', content: { 'application/json': { schema } } };
    for (const method of Array.isArray(r.method) ? r.method : [r.method]) {
      if (method === 'HEAD') continue;
      const op: Record<string, unknown> = {
        summary: r.schema.summary,
        tags: r.schema.tags,
        parameters: params,
        responses: answers,
      };
      if (r.url.startsWith('/v1/admin/')) {
        op.security = [{ admin: [] }];
        if (r.permission) op['x-permission'] = r.permission;
      } else if (r.url === '/v1/checkin' || r.url.startsWith('/v1/blobs/')) op.security = [{ device: [] }];
      if (r.schema.body) op.requestBody = { content: { 'application/json': { schema: r.schema.body } } };
      paths[path] = { ...(paths[path] ?? {}), [method.toLowerCase()]: op };
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Ringfence', version },
    components: {
      securitySchemes: {
        admin: {
          type: 'http',
          scheme: 'bearer',
          description:
            "an operator's token (operator `admin`'s first one is shown once at first start); the role must hold the operation's `x-permission` (read, operate, approve or admin; docs/security.md), else 403",
        },
        device: { type: 'http', scheme: 'bearer', description: 'device token from /v1/enroll' },
      },
    },
    paths,
  };
}

declare module 'fastify' {
  interface FastifySchema {
    /** One-line purpose, published in the OpenAPI document. */
    summary?: string;
    tags?: string[];
    hide?: boolean;
  }
}
