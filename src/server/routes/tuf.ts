// The organisation's TUF repository over HTTP: metadata at /v1/tuf/<name>.json and targets at
// /v1/tuf/targets/<component>/<version>/<sha256>.<name> (consistent snapshots, hash-prefixed). No token:
// everything here is signed and devices verify it themselves, exactly as from any plain mirror.
import { posix } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Repository, releaseTargets } from '../../trust/repository.ts';
import {
  readVendorFile,
  storeVendorMetadata,
  TufSetError,
  VENDOR_FILE,
  VENDOR_NAME,
  type VendorStoreResult,
} from '../../trust/vendor-store.ts';
import { HttpError, type ServerContext } from '../context.ts';
import { appendAudit } from '../db/audit.ts';

export function tufRoutes(app: FastifyInstance, ctx: ServerContext): void {
  // Releases approved before `keys init` ran are signed in once the keys exist.
  app.addHook('onReady', async () => {
    const repo = Repository.open(ctx.dataDir);
    if (!repo) {
      ctx.log.warn('no TUF keys in the data folder: approvals are not signed (run `ringfence keys init`)');
      return;
    }
    const rows = await ctx.store.db
      .selectFrom('releases')
      .select(['component', 'version', 'artifacts'])
      .where('approved_at', 'is not', null)
      .execute();
    const entries = rows.flatMap((r) => releaseTargets({ ...r, artifacts: JSON.parse(r.artifacts) }));
    if (!entries.length || !repo.canSign()) return;
    try {
      await repo.addTargets(entries, ctx.clock());
    } catch (e) {
      ctx.log.error({ err: e }, 'could not sign approved releases into TUF targets');
    }
  });

  app.get(
    '/v1/tuf/:name',
    {
      schema: {
        summary: 'TUF metadata: N.root.json, timestamp.json, N.snapshot.json, N.targets.json',
        tags: ['trust'],
        params: {
          type: 'object',
          required: ['name'],
          properties: { name: { type: 'string', maxLength: 64 } },
        },
      },
    },
    async (req, reply) => {
      const repo = Repository.open(ctx.dataDir);
      if (!repo) throw new HttpError(404, 'this server has no TUF repository (run `ringfence keys init`)');
      const { name } = req.params as { name: string };
      // The timestamp is short-lived; it is re-signed lazily when past half its validity.
      if (name === 'timestamp.json') await repo.freshen(ctx.clock());
      const bytes = repo.file(name);
      if (!bytes) throw new HttpError(404, `no metadata ${name}`);
      reply.header('content-type', 'application/json');
      reply.header('cache-control', /^\d+\./.test(name) ? 'public, max-age=31536000, immutable' : 'no-cache');
      return reply.send(bytes);
    },
  );

  app.get(
    '/v1/tuf/targets/*',
    { schema: { summary: 'A signed target by its hash-prefixed path', tags: ['trust'] } },
    async (req, reply) => {
      const repo = Repository.open(ctx.dataDir);
      if (!repo) throw new HttpError(404, 'this server has no TUF repository');
      const rest = (req.params as { '*': string })['*'];
      const dir = posix.dirname(rest);
      const m = /^([0-9a-f]{64})\.(.+)$/.exec(posix.basename(rest));
      if (!m) throw new HttpError(404, 'targets are served by <dir>/<sha256>.<name>');
      const path = dir === '.' ? m[2] : `${dir}/${m[2]}`;
      // Only what the signed targets list, so this route cannot be used to read arbitrary blobs. The path is
      // chosen by the client: an own-property lookup, or `__proto__` and `constructor` would reach Object.prototype.
      const targets = repo.targets().signed.targets;
      const t = Object.hasOwn(targets, path) ? targets[path] : undefined;
      if (!t || t.hashes?.sha256 !== m[1] || !ctx.blobs.has(m[1]))
        throw new HttpError(404, `no target ${rest}`);
      reply.header('content-type', 'application/octet-stream').header('content-length', t.length);
      reply.header('cache-control', 'public, max-age=31536000, immutable');
      return reply.send(ctx.blobs.read(m[1]));
    },
  );

  app.get(
    '/v1/vendor-tuf/:vendor/:name',
    {
      schema: {
        summary: "A vendor's TUF metadata file as the vendor signed it",
        tags: ['trust'],
        params: {
          type: 'object',
          required: ['vendor', 'name'],
          properties: { vendor: { type: 'string', maxLength: 64 }, name: { type: 'string', maxLength: 64 } },
        },
      },
    },
    async (req, reply) => {
      const { vendor, name } = req.params as { vendor: string; name: string };
      const bytes =
        VENDOR_NAME.test(vendor) && VENDOR_FILE.test(name) ? readVendorFile(ctx.dataDir, vendor, name) : null;
      if (!bytes) throw new HttpError(404, `no metadata ${name} for vendor ${vendor}`);
      reply.header('content-type', 'application/json');
      reply.header('cache-control', /^\d+\./.test(name) ? 'public, max-age=31536000, immutable' : 'no-cache');
      return reply.send(bytes);
    },
  );
}

/** The admin side of dual control: storing a vendor's verified metadata (mounted in the admin plugin). */
export function vendorTufAdminRoutes(app: FastifyInstance, ctx: ServerContext): void {
  // Dual control: the vendor's own TUF metadata, exactly as the vendor signed it (docs/trust.md, "Dual control").
  // Uploaded by `release import --vendor-tuf` after the CLI verified it. The server verifies it again before storing
  // anything, against the vendor root it pinned at the first upload (`root`: the root the operator gave the CLI);
  // devices verify it once more from the vendor root they pin, so, like /v1/tuf, it needs no token to read.
  app.put(
    '/v1/admin/vendor-tuf/:vendor',
    {
      // A vendor's metadata set can be several files of megabytes (its own limit: 8 MB of base64 per file).
      bodyLimit: 64 * 1024 * 1024,
      schema: {
        summary:
          "Verify and store a vendor's TUF metadata set (base64 file contents by name) against the vendor root pinned on this server; the newest timestamp wins",
        tags: ['trust'],
        params: {
          type: 'object',
          required: ['vendor'],
          properties: { vendor: { type: 'string', pattern: VENDOR_NAME.source } },
        },
        body: {
          type: 'object',
          required: ['files'],
          properties: {
            files: {
              type: 'object',
              maxProperties: 1000,
              additionalProperties: { type: 'string', maxLength: 8_000_000 },
            },
            root: {
              type: 'string',
              maxLength: 8_000_000,
              description:
                "the vendor root the operator pinned (base64); required for the vendor's first upload",
            },
            release: { type: 'string', maxLength: 300 },
          },
        },
      },
    },
    async (req) => {
      const { vendor } = req.params as { vendor: string };
      const body = req.body as { files: Record<string, string>; root?: string; release?: string };
      const files = new Map(Object.entries(body.files).map(([n, b64]) => [n, Buffer.from(b64, 'base64')]));
      let r: VendorStoreResult;
      try {
        r = storeVendorMetadata(ctx.dataDir, vendor, files, {
          root: body.root === undefined ? undefined : Buffer.from(body.root, 'base64'),
          now: ctx.clock(),
        });
      } catch (e) {
        if (e instanceof TufSetError) throw new HttpError(400, e.message);
        throw e;
      }
      if (r.stored)
        await ctx.store.db.transaction().execute((tx) =>
          appendAudit(tx, {
            at: ctx.clock(),
            actor: 'admin',
            action: 'vendor-tuf.stored',
            subject: `vendor/${vendor}`,
            detail: {
              files: [...files.keys()].filter((n) => !r.ignored.includes(n)).sort(),
              timestamp_version: r.timestamp_version,
              root_version: r.root_version,
              root_keyids: r.root_keyids,
              pinned: r.pinned,
              release: body.release,
            },
          }),
        );
      return r;
    },
  );
}
