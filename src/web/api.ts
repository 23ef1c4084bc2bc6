// The dashboard's admin API client: the token lives in sessionStorage (gone when the tab closes) and goes with
// every call as a bearer token; the server's {error, message} answers become ApiErrors with their status.
const KEY = 'ringfence.adminToken';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function savedToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

export async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const token = savedToken() ?? '';
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (method === 'POST') headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: method === 'POST' ? JSON.stringify(body ?? {}) : undefined,
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `server unreachable: ${(e as Error).message}`);
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the raw text for the message below
  }
  if (!res.ok) {
    const msg = (parsed as { message?: string } | null)?.message ?? (text.slice(0, 200) || res.statusText);
    if (res.status === 401)
      throw new ApiError(401, `The admin token was refused (401: ${msg}). Paste the current admin token.`);
    throw new ApiError(res.status, `${res.status}: ${msg}`);
  }
  return parsed as T;
}
