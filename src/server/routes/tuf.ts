// The organisation's TUF repository over HTTP: metadata at /v1/tuf/<name>.json and targets at
// /v1/tuf/targets/<component>/<version>/<sha256>.<name> (consistent snapshots, hash-prefixed). No token:
// everything here is signed and devices verify it themselves, exactly as from any plain mirror.
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TufRepository } from '../../trust/signer/tuf-repository.ts';
import { readVendorFile, VENDOR_FILE, VENDOR_NAME } from '../../trust/signer/vendor-store.ts';
import type { ServerContext } from '../context.ts';
import { notFound } from '../errors.ts';
import { callerOf } from '../operator-request.ts';
import { signApprovedReleases } from '../services/releases.ts';
import { storeVendorTuf } from '../services/vendor-tuf.ts';
import { looseObject, noBody, rawBody, VendorStoreSchema } from './schemas/answers.ts';

/** A metadata file: the signed JSON bytes as stored (sent as they are, never re-serialised), or 304. */
const metadataAnswers = {
  200: rawBody(
    'The signed metadata file, byte for byte (ETag; cache-control)',
    'application/json',
    looseObject,
  ),
  304: noBody('Not modified (If-None-Match named the current ETag); no body'),
};

/** Versioned metadata never changes (cache it for good); the rest is fetched fresh. */
const cacheControl = (name: string) =>
  /^\d+\./.test(name) ? 'public, max-age=31536000, immutable' : 'no-cache';

/**
 * A strong validator for a metadata file, so a device can ask "has it changed?" with If-None-Match and get a
 * 304 with no body (docs/trust.md, "Conditional requests"). The timestamp's covers the current root too, so a
 * root rotation is never hidden behind an unchanged timestamp.
 */
const etagOf = (bytes: Buffer, also?: Buffer | null) =>
  `"${createHash('sha256')
    .update(bytes)
    .update(also ?? '')
    .digest('base64url')
    .slice(0, 32)}"`;

/** Answers 304 when the request's If-None-Match names this ETag (a list or `*` as RFC 9110 allows). */
function notModified(req: FastifyRequest, reply: FastifyReply, etag: string): boolean {
  reply.header('etag', etag);
  const h = req.headers['if-none-match'];
  if (typeof h !== 'string' || h.length > 1024) return false;
  const tags = h.split(',').map((t) => t.trim().replace(/^W\//, ''));
  if (!tags.includes(etag) && !tags.includes('*')) return false;
  reply.code(304);
  return true;
}

const metadataParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', maxLength: 64 } },
} as const;

const vendorFileParams = {
  type: 'object',
  required: ['vendor', 'name'],
  properties: { vendor: { type: 'string', maxLength: 64 }, name: { type: 'string', maxLength: 64 } },
} as const;

/** Registers the public TUF routes (the tuf plugin mounts them). */
export function tufRoutes(app: FastifyInstance, ctx: ServerContext): void {
  /** Releases approved before `keys init` ran are signed in once the keys exist. */
  const signOnStart = async () => {
    if (!TufRepository.open(ctx.dataDir)) {
      ctx.log.warn('no TUF keys in the data folder: approvals are not signed (run `ringfence keys init`)');
      return;
    }
    try {
      await signApprovedReleases(ctx.store.db, ctx.dataDir, ctx.clock());
    } catch (e) {
      ctx.log.error({ err: e }, 'could not sign approved releases into TUF targets');
    }
  };

  /** GET /v1/tuf/:name: one metadata file; the timestamp is re-signed lazily when past half its validity. */
  const metadata = async (req: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
    const repo = TufRepository.open(ctx.dataDir);
    if (!repo) throw notFound('this server has no TUF repository (run `ringfence keys init`)');
    const { name } = req.params;
    if (name === 'timestamp.json') await repo.freshen(ctx.clock());
    const bytes = repo.file(name);
    if (!bytes) throw notFound(`no metadata ${name}`);
    reply.header('cache-control', cacheControl(name));
    const etag = etagOf(bytes, name === 'timestamp.json' ? repo.file('root.json') : null);
    if (notModified(req, reply, etag)) return reply.send();
    reply.header('content-type', 'application/json');
    return reply.send(bytes);
  };

  /** GET /v1/tuf/targets/*: a signed target by its hash-prefixed path. */
  const target = async (req: FastifyRequest<{ Params: { '*': string } }>, reply: FastifyReply) => {
    const repo = TufRepository.open(ctx.dataDir);
    if (!repo) throw notFound('this server has no TUF repository');
    const rest = req.params['*'];
    const dir = posix.dirname(rest);
    const m = /^([0-9a-f]{64})\.(.+)$/.exec(posix.basename(rest));
    if (!m) throw notFound('targets are served by <dir>/<sha256>.<name>');
    const path = dir === '.' ? m[2] : `${dir}/${m[2]}`;
    // Only what the signed targets list, so this route cannot be used to read arbitrary blobs. The path is
    // chosen by the client: an own-property lookup, or `__proto__` and `constructor` would reach Object.prototype.
    const targets = repo.targets().signed.targets;
    const t = Object.hasOwn(targets, path) ? targets[path] : undefined;
    if (!t || t.hashes?.sha256 !== m[1] || !ctx.blobs.has(m[1])) throw notFound(`no target ${rest}`);
    reply.header('content-type', 'application/octet-stream').header('content-length', t.length);
    reply.header('cache-control', 'public, max-age=31536000, immutable');
    return reply.send(ctx.blobs.read(m[1]));
  };

  /** GET /v1/vendor-tuf/:vendor/:name: a vendor's metadata file as the vendor signed it. */
  const vendorFile = async (
    req: FastifyRequest<{ Params: { vendor: string; name: string } }>,
    reply: FastifyReply,
  ) => {
    const { vendor, name } = req.params;
    const bytes =
      VENDOR_NAME.test(vendor) && VENDOR_FILE.test(name) ? readVendorFile(ctx.dataDir, vendor, name) : null;
    if (!bytes) throw notFound(`no metadata ${name} for vendor ${vendor}`);
    reply.header('cache-control', cacheControl(name));
    const root = name === 'timestamp.json' ? readVendorFile(ctx.dataDir, vendor, 'root.json') : null;
    if (notModified(req, reply, etagOf(bytes, root))) return reply.send();
    reply.header('content-type', 'application/json');
    return reply.send(bytes);
  };

  app.addHook('onReady', signOnStart);
  app.get(
    '/v1/tuf/:name',
    {
      schema: {
        operationId: 'getTufMetadata',
        summary: 'TUF metadata: N.root.json, timestamp.json, N.snapshot.json, N.targets.json',
        tags: ['trust'],
        params: metadataParams,
        response: metadataAnswers,
      },
    },
    metadata,
  );
  app.get(
    '/v1/tuf/targets/*',
    {
      schema: {
        operationId: 'getTufTarget',
        summary: 'A signed target by its hash-prefixed path: <dir>/<sha256>.<name>',
        tags: ['trust'],
        response: {
          200: rawBody('The target file', 'application/octet-stream', {
            type: 'string',
            contentMediaType: 'application/octet-stream',
          }),
        },
      },
    },
    target,
  );
  app.get(
    '/v1/vendor-tuf/:vendor/:name',
    {
      schema: {
        operationId: 'getVendorTufMetadata',
        summary: "A vendor's TUF metadata file as the vendor signed it",
        tags: ['trust'],
        params: vendorFileParams,
        response: metadataAnswers,
      },
    },
    vendorFile,
  );
}

/** The vendor upload's body as its schema validated it. */
interface VendorTufBody {
  files: Record<string, string>;
  root?: string;
  release?: string;
}

/** The admin side of dual control: storing a vendor's verified metadata (mounted in the admin plugin). */
export function vendorTufAdminRoutes(app: FastifyInstance, ctx: ServerContext): void {
  /**
   * PUT /v1/admin/vendor-tuf/:vendor. Dual control: the vendor's own TUF metadata, exactly as the vendor signed
   * it (docs/trust.md, "Dual control"). Uploaded by `release import --vendor-tuf` after the CLI verified it. The
   * server verifies it again before storing anything, against the vendor root it pinned at the first upload
   * (`root`: the root the operator gave the CLI); devices verify it once more from the vendor root they pin, so,
   * like /v1/tuf, it needs no token to read.
   */
  const store = (req: FastifyRequest<{ Params: { vendor: string }; Body: VendorTufBody }>) => {
    const { files, root, release } = req.body;
    return storeVendorTuf(
      ctx.store.db,
      ctx.dataDir,
      req.params.vendor,
      {
        files: new Map(Object.entries(files).map(([n, b64]) => [n, Buffer.from(b64, 'base64')])),
        root: root === undefined ? undefined : Buffer.from(root, 'base64'),
        release,
      },
      ctx.clock(),
      callerOf(req).actor,
    );
  };

  app.put<{ Params: { vendor: string }; Body: VendorTufBody }>(
    '/v1/admin/vendor-tuf/:vendor',
    {
      // A vendor's metadata set can be several files of megabytes (its own limit: 8 MB of base64 per file).
      bodyLimit: 64 * 1024 * 1024,
      config: { permission: 'admin' },
      schema: {
        summary:
          "Verify and store a vendor's TUF metadata set (base64 file contents by name) against the vendor root pinned on this server; the newest timestamp wins",
        operationId: 'storeVendorTuf',
        tags: ['trust'],
        response: { 200: VendorStoreSchema },
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
    store,
  );
}
