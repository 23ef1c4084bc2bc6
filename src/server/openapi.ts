// Publishes the HTTP API as OpenAPI 3.1, built from the JSON schemas the routes validate and serialise with:
// the request schemas, and the response schemas Fastify writes every answer with (so the document cannot drift
// from what the server sends). Every route declares an operationId and a summary; errors default to the shared
// `{error, message}` body.
import type { FastifySchema } from 'fastify';
import { ErrorBody, looseObject, rawBody } from './routes/schemas/answers.ts';

export interface RouteDoc {
  method: string | string[];
  url: string;
  schema: FastifySchema;
  /** What an admin route needs (roles.ts), published as `x-permission`. */
  permission?: string;
}

/** The parameter name a wildcard (`/v1/tuf/targets/*`) is published under. */
export const WILDCARD_PARAM = 'path';
const ERROR_REF = { $ref: '#/components/schemas/Error' };
const DESCRIPTIONS: Record<string, string> = {
  '200': 'OK',
  '201': 'Created',
  '202': 'Accepted',
  '206': 'Partial content (the Range asked for)',
  '302': 'Redirect',
  '304': 'Not modified (If-None-Match named the current ETag); no body',
  '416': 'Range not satisfiable; no body',
  '4XX': 'Refused: `error` is a short code, `message` says why in one line',
  '5XX': 'Server error or overload: `error` and `message`',
};

/** The `properties` (and `required`) of a params or querystring schema, whatever shape it was given in. */
function objectSchema(s: unknown): { properties: Record<string, unknown>; required: string[] } {
  const o = typeof s === 'object' && s !== null ? s : {};
  const properties =
    'properties' in o && typeof o.properties === 'object' && o.properties !== null ? o.properties : {};
  const required = 'required' in o && Array.isArray(o.required) ? o.required.map(String) : [];
  return { properties: { ...properties }, required };
}

/**
 * A Fastify URL as an OpenAPI path template, with its path parameters in order: `:name` (with or without a
 * `(regex)` constraint) becomes `{name}`, a trailing wildcard `*` becomes `{path}` (which may hold slashes).
 */
export function pathTemplate(url: string): { path: string; names: Array<{ name: string; from: string }> } {
  const names: Array<{ name: string; from: string }> = [];
  const path = url
    .replace(/:([A-Za-z_][A-Za-z0-9_]*)(\((?:\\.|[^)])*\))?/g, (_m, name: string) => {
      names.push({ name, from: name });
      return `{${name}}`;
    })
    .replace(/\*$/, () => {
      names.push({ name: WILDCARD_PARAM, from: '*' });
      return `{${WILDCARD_PARAM}}`;
    });
  return { path, names };
}

/** The OpenAPI status key of a Fastify one: `4xx` → `4XX`. */
const statusKey = (s: string) => s.toUpperCase();

/** A Fastify response schema as an OpenAPI response object. */
function responseObject(status: string, s: unknown): Record<string, unknown> {
  const o = (typeof s === 'object' && s !== null ? s : {}) as Record<string, unknown>;
  const description = typeof o.description === 'string' ? o.description : (DESCRIPTIONS[status] ?? 'Answer');
  // Content-keyed (raw answers) as they are; a schema of a description alone is an answer with no body.
  if ('content' in o) return { description, content: o.content };
  if (Object.keys(o).every((k) => k === 'description')) return { description };
  return { description, content: { 'application/json': { schema: o } } };
}

/** The responses of a route: those it declares, and the error body for 4XX and 5XX unless it declares its own. */
function responses(s: unknown): Record<string, unknown> {
  const declared = typeof s === 'object' && s !== null ? (s as Record<string, unknown>) : {};
  const out: Record<string, unknown> = {};
  for (const [status, schema] of Object.entries(declared))
    out[statusKey(status)] = responseObject(statusKey(status), schema);
  for (const status of ['4XX', '5XX'])
    out[status] ??= {
      description: DESCRIPTIONS[status],
      content: { 'application/json': { schema: ERROR_REF } },
    };
  return out;
}

/** A stable operationId for a route that declares none: the method and the path's literal words. */
function fallbackId(method: string, url: string): string {
  const words = url.split(/[^A-Za-z0-9]+/).filter((w) => w && !/^v\d+$/.test(w));
  return [method.toLowerCase(), ...words].map((w, i) => (i ? w[0].toUpperCase() + w.slice(1) : w)).join('');
}

/** The security scheme of a route by where it lives: admin routes take an operator token, device routes theirs. */
function security(url: string): unknown[] | undefined {
  if (url.startsWith('/v1/admin/')) return [{ admin: [] }];
  if (url === '/v1/checkin' || url === '/v1/wait') return [{ device: [] }];
  // Either token fetches a blob (operators to inspect content, devices only what approved releases hold).
  if (url.startsWith('/v1/blobs/')) return [{ device: [] }, { admin: [] }];
  return undefined;
}

/** Builds the OpenAPI document from the registered routes. */
export function openApiDocument(routes: RouteDoc[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const { path, names } = pathTemplate(r.url);
    const pathParams = objectSchema(r.schema.params).properties;
    const params: Array<Record<string, unknown>> = names.map(({ name, from }) => ({
      name,
      in: 'path',
      required: true,
      schema: pathParams[from] ?? { type: 'string' },
      ...(from === '*' ? { description: 'the rest of the path; may contain `/`' } : {}),
    }));
    const query = objectSchema(r.schema.querystring);
    for (const [name, schema] of Object.entries(query.properties))
      params.push({ name, in: 'query', required: query.required.includes(name), schema });
    for (const method of Array.isArray(r.method) ? r.method : [r.method]) {
      // Fastify answers HEAD for every GET; the GET documents it.
      if (method === 'HEAD') continue;
      const op: Record<string, unknown> = {
        operationId: r.schema.operationId ?? fallbackId(method, r.url),
        summary: r.schema.summary,
        ...(r.schema.description ? { description: r.schema.description } : {}),
        tags: r.schema.tags,
        parameters: params,
        responses: responses(r.schema.response),
      };
      const sec = security(r.url);
      if (sec) op.security = sec;
      if (r.url.startsWith('/v1/admin/') && r.permission) op['x-permission'] = r.permission;
      if (r.schema.body) op.requestBody = { content: { 'application/json': { schema: r.schema.body } } };
      else if (r.schema.bodyType)
        op.requestBody = {
          required: true,
          content: {
            [r.schema.bodyType]: { schema: { type: 'string', contentMediaType: r.schema.bodyType } },
          },
        };
      paths[path] = { ...(paths[path] ?? {}), [method.toLowerCase()]: op };
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Ringfence', version },
    components: {
      schemas: { Error: ErrorBody },
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
    /** Stable camelCase name of the operation, unique across the API (clients generate method names from it). */
    operationId?: string;
    /** One-line purpose, published in the OpenAPI document. */
    summary?: string;
    description?: string;
    tags?: string[];
    hide?: boolean;
    /** The media type of a raw request body (a route with no JSON `body` schema, e.g. a blob upload). */
    bodyType?: string;
  }
}

/** The schemas of the server's own routes (app.ts): liveness, metrics and this document. */
export const OPS_SCHEMAS = {
  health: {
    operationId: 'health',
    summary: 'Liveness and version',
    tags: ['ops'],
    response: {
      200: {
        type: 'object',
        required: ['ok', 'version'],
        properties: { ok: { type: 'boolean' }, version: { type: 'string' } },
      },
    },
  },
  metrics: {
    operationId: 'metrics',
    summary: 'Prometheus metrics (text exposition format)',
    tags: ['ops'],
    response: { 200: rawBody('The metrics', 'text/plain') },
  },
  openApi: {
    operationId: 'openApi',
    summary: 'This API as OpenAPI 3.1',
    tags: ['ops'],
    response: { 200: looseObject },
  },
} satisfies Record<string, FastifySchema>;
