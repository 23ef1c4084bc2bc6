// The web dashboard's static files (built by `npm run build:web` into dist/web). Serving them needs no token:
// the page holds no data, and every API call it makes still carries the admin token.
import { existsSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { packageRoot } from '../../files/package-root.ts';
import { errorCode } from '../errors.ts';

/** The dashboard's built files: dist/web of the checkout or of the installed package. */
export const DEFAULT_WEB_DIR = join(packageRoot(), 'dist/web');

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
};

// Vite names assets by content hash: one flat folder of plain names, so anything else is refused outright
// (no path can climb out of the folder).
const ASSET = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

const MISSING = `<!doctype html><html lang="en"><meta charset="utf-8"><title>Ringfence</title>
<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto">
<h1>Ringfence dashboard not built</h1>
<p>The web dashboard's files are missing. Build them once with <code>npm run build:web</code>, then reload.</p>
<p>The REST API works without them: see <a href="/v1/openapi.json">/v1/openapi.json</a>.</p></body></html>`;

/** Headers that keep the page from being framed, sniffed or talking to other origins. */
function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header(
      'content-security-policy',
      "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    )
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY')
    .header('referrer-policy', 'no-referrer');
}

/** Registers the dashboard's routes serving `dir` (the web plugin mounts them; tests mount them bare). */
export function webRoutes(app: FastifyInstance, dir: string = DEFAULT_WEB_DIR): void {
  /** GET / and /index.html: the page, read per request (a build made while the server runs shows on reload). */
  const index = async (_req: FastifyRequest, reply: FastifyReply) => {
    const file = join(dir, 'index.html');
    secure(reply).header('cache-control', 'no-cache').type('text/html; charset=utf-8');
    if (!existsSync(file)) return reply.code(503).send(MISSING);
    return reply.send(readFileSync(file));
  };

  /** GET /assets/:name: one built asset, by its plain content-hashed name. */
  const asset = async (req: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
    const { name } = req.params;
    const type = TYPES[extname(name)];
    const file = join(dir, 'assets', name);
    if (!ASSET.test(name) || !type || !existsSync(file))
      return reply.code(404).send({ error: errorCode(404), message: `no asset ${name}` });
    return secure(reply)
      .header('cache-control', 'public, max-age=31536000, immutable')
      .type(type)
      .send(readFileSync(file));
  };

  app.get('/', { schema: { hide: true } }, index);
  app.get('/index.html', { schema: { hide: true } }, index);
  app.get('/assets/:name', { schema: { hide: true } }, asset);
}
