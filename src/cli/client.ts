// The CLI's HTTP client for the admin API: server and token from flags or RINGFENCE_SERVER / RINGFENCE_TOKEN.
export interface Conn {
  server: string;
  token: string;
}

export class CliError extends Error {}

export function connection(opts: { server?: string; token?: string }): Conn {
  const server = opts.server ?? process.env.RINGFENCE_SERVER ?? 'http://127.0.0.1:8080';
  const token = opts.token ?? process.env.RINGFENCE_TOKEN;
  if (!token)
    throw new CliError(
      'no admin token: pass --token or set RINGFENCE_TOKEN (shown once when the server first started)',
    );
  return { server, token };
}

/** Calls the admin API; throws a one-line CliError with the server's message on failure. */
export async function api<T = unknown>(
  conn: Conn,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  let res: Response;
  const isRaw = body instanceof Uint8Array || body instanceof ReadableStream;
  try {
    res = await fetch(new URL(path, conn.server), {
      method,
      headers: {
        authorization: `Bearer ${conn.token}`,
        ...(body === undefined
          ? {}
          : { 'content-type': isRaw ? 'application/octet-stream' : 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : isRaw ? (body as BodyInit) : JSON.stringify(body),
      ...(isRaw ? { duplex: 'half' } : {}),
    } as RequestInit);
  } catch (e) {
    throw new CliError(
      `cannot reach ${conn.server}: ${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}`,
    );
  }
  const text = await res.text();
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {}
  if (!res.ok) {
    const msg = (data as { message?: string } | null)?.message ?? text;
    throw new CliError(`${method} ${path}: ${res.status} ${msg}`);
  }
  return data as T;
}
