// The CLI's HTTP client for the admin API. Where the server and token come from (flags, environment, contexts)
// is contexts.ts's connection().
export interface Conn {
  server: string;
  token: string;
}

/**
 * A one-line failure. `code` is the machine-readable `error` of `--json` output; `exitCode` follows the contract
 * (docs/cli.md, "Exit codes"): 1 refused or failed, 2 usage error, 3 server unreachable or token rejected.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = 'failed',
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** A usage error (a bad or missing flag, argument or setting): exit code 2, `usage` in --json output. */
export function usageError(message: string): CliError {
  return new CliError(message, 'usage', 2);
}

/**
 * fetch(), but a request Node 20's fetch loses — a server that resets the connection can leave its promise
 * unsettled for ever, and the process would then end with status 13 and no message — is rejected when nothing else
 * is left to run (beforeExit), so the caller reports it like any unreachable server.
 */
function fetchOrLost(url: URL, init: RequestInit): Promise<Response> {
  return new Promise((resolve, reject) => {
    const lost = () => reject(new Error('the connection closed before any answer'));
    process.once('beforeExit', lost);
    fetch(url, init)
      .then(resolve, reject)
      .finally(() => process.off('beforeExit', lost));
  });
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
    res = await fetchOrLost(new URL(path, conn.server), {
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
      'unreachable',
      3,
    );
  }
  const text = await res.text();
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {}
  if (!res.ok) {
    const body = data as { error?: string; message?: string } | null;
    const msg = body?.message ?? text;
    const rejected = res.status === 401;
    throw new CliError(
      `${method} ${path}: ${res.status} ${msg}`,
      rejected ? 'unauthorized' : (body?.error ?? `http_${res.status}`),
      rejected ? 3 : 1,
    );
  }
  return data as T;
}
