// The agent's HTTP client on node:http / node:https. Not the global fetch: loading undici costs a device about
// 12 MB of resident memory for as long as the agent runs (see docs/agent.md, "Memory"), and the agent needs
// only plain requests: JSON in and out, and streamed downloads.
import type { IncomingMessage } from 'node:http';

export interface HttpResponse {
  status: number;
  /** The body as a stream; read it (or call `discard`) so the socket is freed. */
  body: IncomingMessage;
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Abort when no response has completed within this time (the whole exchange, body included). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Abort when the connection is silent this long (a stalled or trickling download); no limit by default. */
  idleTimeoutMs?: number;
}

/**
 * CA certificates (PEM) trusted for one origin instead of the system's: the agent's `ca:` option for its
 * https server, which also applies to the TUF metadata and blobs fetched from it. Other origins (a mirror, a
 * redirect elsewhere, health checks) keep the system's trust store.
 */
const trustedCa = new Map<string, string | Buffer>();

export function trustCa(origin: string, ca: string | Buffer): void {
  trustedCa.set(new URL(origin).origin, ca);
}

// OpenSSL's codes for a server certificate the client does not trust (or that is not for this host).
const TLS_TRUST = /CERT|UNABLE_TO|ALTNAME|SELF_SIGNED/;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * Sends a request; resolves when the response headers arrive. Redirects are followed as fetch does (up to 20;
 * 303, and 301/302 after a POST, continue as GET; credentials are not sent to another origin), so a mirror or
 * health endpoint behind a redirect behaves as before. Network errors reject with their own message.
 */
export async function request(url: string | URL, req: HttpRequest = {}): Promise<HttpResponse> {
  let u = typeof url === 'string' ? new URL(url) : url;
  const signal =
    req.timeoutMs !== undefined
      ? req.signal
        ? AbortSignal.any([req.signal, AbortSignal.timeout(req.timeoutMs)])
        : AbortSignal.timeout(req.timeoutMs)
      : req.signal;
  let method = req.method ?? 'GET';
  let body = req.body;
  const headers: Record<string, string> = { ...req.headers };
  for (let hops = 0; ; hops++) {
    const res = await once(u, method, headers, body, signal, req.idleTimeoutMs);
    const location = res.body.headers.location;
    if (!REDIRECTS.has(res.status) || !location) return res;
    discard(res);
    if (hops >= 20) throw new Error(`too many redirects: ${u.href}`);
    const next = new URL(location, u);
    if (next.origin !== u.origin) {
      delete headers.authorization;
      delete headers.Authorization;
    }
    if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
      method = 'GET';
      body = undefined;
      delete headers['content-type'];
    }
    u = next;
  }
}

async function once(
  u: URL,
  method: string,
  headers: Record<string, string>,
  body: string | undefined,
  signal: AbortSignal | undefined,
  idleTimeoutMs: number | undefined,
): Promise<HttpResponse> {
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`unsupported URL ${u.href}`);
  // Loaded on first use: a device that only talks plain HTTP never loads TLS.
  const tls = u.protocol === 'https:';
  const mod = tls ? await import('node:https') : await import('node:http');
  const h: Record<string, string | number> = { ...headers };
  if (body !== undefined) h['content-length'] = Buffer.byteLength(body);
  const ca = tls ? trustedCa.get(u.origin) : undefined;
  return new Promise((resolve, reject) => {
    const r = mod.request(u, { method, headers: h, signal, ...(ca ? { ca } : {}) }, (res) =>
      resolve({ status: res.statusCode ?? 0, body: res }),
    );
    if (idleTimeoutMs !== undefined)
      r.setTimeout(idleTimeoutMs, () => r.destroy(new Error(`stalled: no data for ${idleTimeoutMs} ms`)));
    r.once('error', (e: NodeJS.ErrnoException) => {
      if (signal?.aborted) reject(new Error(`timed out: ${u.href}`));
      else if (tls && TLS_TRUST.test(String(e.code)))
        reject(
          new Error(
            `TLS: the certificate of ${u.origin} is not trusted (${e.code}: ${e.message})${
              ca ? ' by the configured ca' : '; set `ca:` in the agent config to the CA that issued it'
            }`,
          ),
        );
      else reject(e);
    });
    r.end(body);
  });
}

/** Reads a whole body as text; past `maxBytes` the response is dropped and this rejects (no endless bodies). */
export async function text(res: HttpResponse, maxBytes = Number.POSITIVE_INFINITY): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > maxBytes) {
      res.body.destroy();
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses a JSON body; an error response that is not JSON becomes `{ message: <its start> }` to report. */
export async function json<T>(res: HttpResponse, maxBytes?: number): Promise<T> {
  const t = await text(res, maxBytes);
  try {
    return JSON.parse(t) as T;
  } catch (e) {
    if (res.status >= 400) return { message: t.slice(0, 200) } as T;
    throw e;
  }
}

export function discard(res: HttpResponse): void {
  res.body.resume();
}
