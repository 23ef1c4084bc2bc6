// Admin API for blobs and releases: upload content, register immutable releases, approve them.

import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { ArtifactNames, badArtifactName, MAX_ARTIFACTS, NAME_RE } from '../../protocol/names.ts';
import { publishRelease } from '../../trust/repository.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { appendAudit } from '../db/audit.ts';

const NAME = NAME_RE.source;

export interface ReleaseView {
  component: string;
  version: string;
  /** `mode`: the file's permission bits (0..0o777) as imported; absent for releases imported without one. */
  artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
  created_at: number;
  approved: boolean;
  approved_at: number | null;
  approved_by: string | null;
  provenance: Record<string, unknown>;
}

/** Splits "name@version". */
export function parseRef(ref: string): { component: string; version: string } {
  const i = ref.lastIndexOf('@');
  if (i <= 0 || i === ref.length - 1) throw new HttpError(400, `expected NAME@VERSION, got "${ref}"`);
  return { component: ref.slice(0, i), version: ref.slice(i + 1) };
}

export function adminReleaseRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { db } = ctx.store;

  // Raw bodies only for the blob upload: a raw stream handed to a JSON route would be "validated" (and mangled)
  // as if it were an object.
  app.addContentTypeParser('application/octet-stream', (req, payload, done) => {
    if (req.routeOptions.url === '/v1/admin/blobs') done(null, payload);
    else done(new HttpError(415, 'this route takes application/json'), undefined);
  });

  app.post(
    '/v1/admin/blobs',
    {
      bodyLimit: 16 * 1024 ** 3,
      schema: { summary: 'Upload one blob (raw body); returns its sha256 and length', tags: ['releases'] },
    },
    async (req) => {
      if (req.headers['content-type'] !== 'application/octet-stream') {
        throw new HttpError(415, 'send the blob as application/octet-stream');
      }
      const expect = typeof req.headers['x-sha256'] === 'string' ? req.headers['x-sha256'] : undefined;
      try {
        return await ctx.blobs.put(req.body as Readable, { sha256: expect });
      } catch (e) {
        throw new HttpError(400, (e as Error).message);
      }
    },
  );

  app.post(
    '/v1/admin/releases',
    {
      schema: {
        summary: 'Register an immutable release from uploaded blobs',
        tags: ['releases'],
        body: {
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
        },
      },
    },
    async (req, reply) => {
      const body = req.body as {
        component: string;
        version: string;
        artifacts: Array<{ name: string; sha256: string; length: number; mode?: number }>;
        provenance?: Record<string, unknown>;
      };
      // Stored in one canonical shape and key order (name, sha256, length, mode when given): what is signed,
      // offered and compared (bundle import) is then the same whatever order the client sent.
      const artifacts = body.artifacts.map((a) => ({
        name: a.name,
        sha256: a.sha256,
        length: a.length,
        ...(typeof a.mode === 'number' ? { mode: a.mode } : {}),
      }));
      // The same rules every agent applies to an offer: a release the server accepts is one devices accept.
      const names = new ArtifactNames();
      for (const a of artifacts) {
        const bad = badArtifactName(a.name) ?? names.add(a.name);
        if (bad) throw new HttpError(400, bad);
        if (!ctx.blobs.has(a.sha256))
          throw new HttpError(400, `blob ${a.sha256} of "${a.name}" was not uploaded`);
        if (ctx.blobs.size(a.sha256) !== a.length)
          throw new HttpError(400, `length of "${a.name}" does not match its blob`);
      }
      const now = ctx.clock();
      await db.transaction().execute(async (tx) => {
        const exists = await tx
          .selectFrom('releases')
          .select('id')
          .where('component', '=', body.component)
          .where('version', '=', body.version)
          .executeTakeFirst();
        if (exists)
          throw new HttpError(
            409,
            `release ${body.component}@${body.version} exists; releases are immutable`,
          );
        await tx
          .insertInto('releases')
          .values({
            component: body.component,
            version: body.version,
            artifacts: JSON.stringify(artifacts),
            provenance: JSON.stringify(body.provenance ?? {}),
            created_at: now,
            approved_at: null,
            approved_by: null,
          })
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'release.imported',
          subject: `release/${body.component}@${body.version}`,
          detail: { artifacts, provenance: body.provenance ?? {} },
        });
      });
      reply.code(201);
      return { component: body.component, version: body.version };
    },
  );

  app.get('/v1/admin/releases', { schema: { summary: 'List releases', tags: ['releases'] } }, async () => {
    const rows = await db.selectFrom('releases').selectAll().orderBy('id').execute();
    return rows.map(
      (r): ReleaseView => ({
        component: r.component,
        version: r.version,
        artifacts: JSON.parse(r.artifacts),
        created_at: r.created_at,
        approved: r.approved_at !== null,
        approved_at: r.approved_at,
        approved_by: r.approved_by,
        provenance: JSON.parse(r.provenance),
      }),
    );
  });

  app.post(
    '/v1/admin/releases/:ref/approve',
    { schema: { summary: 'Approve a release for rollout (organisation sign-off)', tags: ['releases'] } },
    async (req) => {
      const { component, version } = parseRef((req.params as { ref: string }).ref);
      const now = ctx.clock();
      await db.transaction().execute(async (tx) => {
        const rel = await tx
          .selectFrom('releases')
          .select(['id', 'approved_at', 'artifacts'])
          .where('component', '=', component)
          .where('version', '=', version)
          .executeTakeFirst();
        if (!rel) throw new HttpError(404, `no release ${component}@${version}`);
        // Signed into the organisation's TUF targets inside the transaction: a signing failure undoes the approval.
        const signed = await publishRelease(
          ctx.dataDir,
          { component, version, artifacts: JSON.parse(rel.artifacts) },
          now,
        );
        if (rel.approved_at !== null) return;
        await tx
          .updateTable('releases')
          .set({ approved_at: now, approved_by: 'admin' })
          .where('id', '=', rel.id)
          .execute();
        await appendAudit(tx, {
          at: now,
          actor: 'admin',
          action: 'release.approved',
          subject: `release/${component}@${version}`,
          detail: signed ? { tuf_targets_version: signed.targetsVersion } : { tuf: 'unsigned (no keys)' },
        });
      });
      return { component, version, approved: true };
    },
  );
}
