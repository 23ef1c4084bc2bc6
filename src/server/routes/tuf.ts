// The organisation's TUF repository over HTTP: metadata at /v1/tuf/<name>.json and targets at
// /v1/tuf/targets/<component>/<version>/<sha256>.<name> (consistent snapshots, hash-prefixed). No token:
// everything here is signed and devices verify it themselves, exactly as from any plain mirror.
import { posix } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Repository, targetPath } from '../../trust/repository.ts';
import { HttpError, type ServerContext } from '../context.ts';

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
    const entries = rows.flatMap((r) =>
      (JSON.parse(r.artifacts) as Array<{ name: string; sha256: string; length: number }>).map((a) => ({
        path: targetPath(r.component, r.version, a.name),
        sha256: a.sha256,
        length: a.length,
        custom: { component: r.component, version: r.version, name: a.name },
      })),
    );
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
      // Only what the signed targets list, so this route cannot be used to read arbitrary blobs.
      const t = repo.targets().signed.targets[path];
      if (!t || t.hashes.sha256 !== m[1] || !ctx.blobs.has(m[1]))
        throw new HttpError(404, `no target ${rest}`);
      reply.header('content-type', 'application/octet-stream').header('content-length', t.length);
      reply.header('cache-control', 'public, max-age=31536000, immutable');
      return reply.send(ctx.blobs.read(m[1]));
    },
  );
}
