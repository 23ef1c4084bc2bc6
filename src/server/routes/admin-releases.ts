// Admin API for blobs and releases: upload content, register immutable releases, approve them. Each route
// validates its input, calls a service and shapes the answer.
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MAX_ARTIFACTS, NAME_RE } from '../../protocol/names.ts';
import type { ServerContext } from '../context.ts';
import { badRequest, unsupportedMedia } from '../errors.ts';
import { callerOf } from '../operator-request.ts';
import { approveRelease, importRelease, type ReleaseArtifact, releaseViews } from '../services/releases.ts';
import { arrayOf, boolean, integer, objectOf, ReleaseViewSchema, string } from './schemas/answers.ts';

export { parseRef } from '../services/release-ref.ts';
export type { ReleaseView } from '../services/releases.ts';

const NAME = NAME_RE.source;

const releaseBody = {
  type: 'object',
  required: ['component', 'version', 'artifacts'],
  additionalProperties: false,
  properties: {
    component: { type: 'string', pattern: NAME },
    version: { type: 'string', pattern: NAME },
    artifacts: {
      type: 'array',
      minItems: 1,
      maxItems: MAX_ARTIFACTS,
      items: {
        type: 'object',
        required: ['name', 'sha256', 'length'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 1024 },
          sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
          length: { type: 'integer', minimum: 0 },
          // The file mode (permission bits; devices apply at most 0o755). Part of the release: it is
          // signed into the TUF targets at approval (custom.mode) and offered to devices.
          mode: { type: 'integer', minimum: 0, maximum: 0o777 },
        },
      },
    },
    provenance: { type: 'object' },
  },
} as const;

/** The release body as the schema above validated it. */
interface ReleaseBody {
  component: string;
  version: string;
  artifacts: ReleaseArtifact[];
  provenance?: Record<string, unknown>;
}

/** Who is calling, as the audit log names it (the operator, and its token when named). */
export function actorOf(req: FastifyRequest): string {
  return callerOf(req).actor;
}

/** Registers the blob and release routes (inside the admin plugin). */
export function adminReleaseRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  /** POST /v1/admin/blobs: store one raw blob, checked against x-sha256 when sent. */
  const uploadBlob = async (req: FastifyRequest<{ Body: Readable }>) => {
    if (req.headers['content-type'] !== 'application/octet-stream')
      throw unsupportedMedia('send the blob as application/octet-stream');
    const expect = typeof req.headers['x-sha256'] === 'string' ? req.headers['x-sha256'] : undefined;
    try {
      return await ctx.blobs.put(req.body, { sha256: expect });
    } catch (e) {
      throw badRequest(e instanceof Error ? e.message : String(e));
    }
  };

  /** POST /v1/admin/releases: register an immutable release (201). */
  const register = async (req: FastifyRequest<{ Body: ReleaseBody }>, reply: FastifyReply) => {
    const { component, version } = req.body;
    await importRelease(db, ctx.blobs, req.body, ctx.clock(), actorOf(req));
    reply.code(201);
    return { component, version };
  };

  /** POST /v1/admin/releases/:ref/approve: approve and sign. */
  const approve = (req: FastifyRequest<{ Params: { ref: string } }>) =>
    approveRelease(db, ctx.dataDir, req.params.ref, ctx.clock(), actorOf(req), ctx.governance);

  // Raw bodies only for the blob upload: a raw stream handed to a JSON route would be "validated" (and mangled)
  // as if it were an object.
  app.addContentTypeParser('application/octet-stream', (req, payload, done) => {
    if (req.routeOptions.url === '/v1/admin/blobs') done(null, payload);
    else done(unsupportedMedia('this route takes application/json'), undefined);
  });
  app.post<{ Body: Readable }>(
    '/v1/admin/blobs',
    {
      bodyLimit: 16 * 1024 ** 3,
      config: { permission: 'operate' },
      schema: {
        operationId: 'uploadBlob',
        summary: 'Upload one blob (raw body); returns its sha256 and length',
        tags: ['releases'],
        bodyType: 'application/octet-stream',
        response: { 200: objectOf({ sha256: string, length: integer }) },
      },
    },
    uploadBlob,
  );
  app.post<{ Body: ReleaseBody }>(
    '/v1/admin/releases',
    {
      config: { permission: 'operate' },
      schema: {
        operationId: 'importRelease',
        summary: 'Register an immutable release from uploaded blobs',
        tags: ['releases'],
        body: releaseBody,
        response: { 201: objectOf({ component: string, version: string }) },
      },
    },
    register,
  );
  app.get(
    '/v1/admin/releases',
    {
      config: { permission: 'read' },
      schema: {
        operationId: 'listReleases',
        summary: 'List releases (with who imported each, and what awaits whose approval)',
        tags: ['releases'],
        response: { 200: arrayOf(ReleaseViewSchema) },
      },
    },
    () => releaseViews(db, ctx.governance),
  );
  app.post<{ Params: { ref: string } }>(
    '/v1/admin/releases/:ref/approve',
    {
      config: { permission: 'approve' },
      schema: {
        operationId: 'approveRelease',
        summary: 'Approve a release for rollout (organisation sign-off; not by its importer: four eyes)',
        tags: ['releases'],
        params: objectOf({ ref: { type: 'string', description: 'the release, NAME@VERSION' } }),
        response: { 200: objectOf({ component: string, version: string, approved: boolean }) },
      },
    },
    approve,
  );
}
