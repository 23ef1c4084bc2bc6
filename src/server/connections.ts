// The HTTP server's edges: timeouts, a per-address connection cap, request targets and JSON bodies checked
// before any route sees them.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { HttpError } from './context.ts';
import { jsonDepthExceeds, type ServerLimits } from './limits.ts';

/**
 * Fastify's server options for the limits: idle, keep-alive and whole-request timeouts. Node's own headers and
 * request timeouts are set too, but node 20 did not close a connection whose headers never finished (measured),
 * so guardEdges enforces both itself.
 */
export function timeoutOptions(
  l: ServerLimits,
  tls?: { cert: string | Buffer; key: string | Buffer },
): Record<string, unknown> {
  const request = l.requestTimeoutS * 1000;
  const node = { headersTimeout: Math.min(l.headersTimeoutS * 1000, request), requestTimeout: request };
  return {
    connectionTimeout: l.idleTimeoutS * 1000,
    keepAliveTimeout: Math.min(l.idleTimeoutS, 65) * 1000,
    requestTimeout: request,
    ...(tls
      ? { https: { ...node, handshakeTimeout: node.headersTimeout, cert: tls.cert, key: tls.key } }
      : { http: node }),
  };
}

/** Installs the connection cap, origin-form-only targets and the depth-checked JSON parser. */
export function guardEdges(
  app: FastifyInstance,
  l: ServerLimits,
  tls: boolean,
  onRefused: (why: string) => void,
): void {
  const server = app.server;
  const open = new Map<string, number>();
  const headersMs = Math.min(l.headersTimeoutS, l.requestTimeoutS) * 1000;
  const headerTimers = new WeakMap<Socket, NodeJS.Timeout>();
  server.on('request', (req: IncomingMessage) => {
    clearTimeout(headerTimers.get(req.socket));
    // The whole request (a slowly trickled body included) must arrive within the request timeout.
    if (req.complete) return;
    const whole = setTimeout(() => {
      if (req.complete) return; // received in full; the answer may still be streaming, which is fine
      onRefused('request-timeout');
      req.socket.destroy();
    }, l.requestTimeoutS * 1000);
    whole.unref();
    req.once('end', () => clearTimeout(whole));
    req.once('close', () => clearTimeout(whole));
  });
  /** Slow-loris: a connection whose first request headers do not arrive in time is closed. */
  const headersDue = (sock: Socket) => {
    const t = setTimeout(() => {
      onRefused('headers-timeout');
      sock.destroy();
    }, headersMs);
    t.unref();
    headerTimers.set(sock, t);
    sock.once('close', () => clearTimeout(t));
  };
  // With TLS, requests arrive on the TLS socket (the one `request` sees), so its timer starts once the handshake
  // is done; the handshake itself is bounded by the server's handshakeTimeout (timeoutOptions).
  if (tls) server.on('secureConnection', headersDue);
  server.on('connection', (sock: Socket) => {
    const ip = sock.remoteAddress ?? '?';
    const n = (open.get(ip) ?? 0) + 1;
    if (n > l.connectionsPerIp) {
      onRefused('connections');
      sock.destroy();
      return;
    }
    open.set(ip, n);
    if (!tls) headersDue(sock);
    sock.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1;
      if (left <= 0) open.delete(ip);
      else open.set(ip, left);
    });
  });

  // Only origin-form targets ("/path"): an absolute-form target ("http://host/path") or "*" is refused, so no
  // URL spelling reaches a route the plain path would not.
  app.addHook('onRequest', async (req) => {
    if (!req.raw.url?.startsWith('/')) throw new HttpError(400, 'request target must be a path');
  });

  // Schema coercion turns "1e400" into Infinity and "1e20" into an integer no query can use, and both pass
  // `type: integer` (and `maximum`, measured): numbers in the path and query must be finite safe integers or
  // plain fractions, for every route at once.
  app.addHook('preHandler', async (req) => {
    for (const [where, values] of [
      ['path', req.params],
      ['query', req.query],
    ] as const)
      for (const [k, v] of Object.entries((values ?? {}) as Record<string, unknown>))
        if (
          typeof v === 'number' &&
          (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v)))
        )
          throw new HttpError(400, `${where} ${k}: ${v} is not a usable number`);
  });

  const parse = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonDepthExceeds(body as string, l.jsonMaxDepth)) {
      done(new HttpError(400, `JSON nested deeper than ${l.jsonMaxDepth} levels`), undefined);
      return;
    }
    parse(req, body as string, done);
  });
}
